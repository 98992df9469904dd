"""Reservations: one client holds a device for a while; others' calls are refused.

``Reservable`` is the part of every served device that keeps the reservation (owner and
lease end) and checks callers against it. A caller names itself with the request
annotation ``PIOW`` (a pyroinst proxy that reserved does so by itself).

A granted reservation owns the device from that moment: jobs that other owners queued
before the grant are cancelled when it is granted, each with DeviceReserved as its
outcome (``job.result()`` raises it; its status says ``cancelled``), and a queued job
never starts while someone else holds the device. A job already running when the
reservation is granted runs to its end (stopping hardware mid-operation is the owner's
decision: ``job_cancel`` stays open to the job's own client until the grant).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from Pyro5.callcontext import current_context
from Pyro5.server import expose

from .errors import DeviceReserved
from .handles import OWNER_ANNOTATION

__all__ = ["Reservable", "caller"]

log = logging.getLogger(__name__)


class Reservable:
    """Mixin for device servants: ``reserve``, ``release``, ``reservation`` and the check."""

    _name: str
    _reservation: tuple[str, float] | None = None
    _reservation_lock: threading.RLock
    _worker: Any

    @expose
    def reserve(self, owner: str, lease_s: float = 60.0) -> dict[str, Any]:
        """Reserve the device for ``owner`` for ``lease_s`` seconds (call again to renew).

        While reserved, other clients' calls and jobs raise DeviceReserved; methods marked
        @concurrent and the job_status/job_wait/job_result/job_list members stay open.
        The owner's calls name it (a pyroinst proxy that reserved does so by itself).
        """
        owner = str(owner)
        if not owner:
            raise ValueError("owner must be a non-empty name")
        lease_s = float(lease_s)
        if not 0 < lease_s <= 7 * 24 * 3600:
            raise ValueError(f"lease_s must be between 0 and 604800 s, got {lease_s:g}")
        with self._reservation_lock:
            current = self._current_reservation()
            if current is not None and current[0] != owner:
                raise self._reserved_error(current, "reserve()")
            self._reservation = (owner, time.time() + lease_s)
            log.info("device '%s' reserved by %r for %g s", self._name, owner, lease_s)
            if current is None:
                granted = self._reservation
                refused = self._worker.refuse_queued(
                    lambda job: job.owner == owner,
                    lambda job: self._reserved_error(granted, f"job {job.id} ({job.method})"),
                )
                if refused:
                    log.info(
                        "device '%s': %d queued job(s) of other owners cancelled by the "
                        "reservation of %r",
                        self._name,
                        refused,
                        owner,
                    )
            return self.reservation()  # type: ignore[return-value]

    @expose
    def release(self) -> bool:
        """End the caller's reservation; False if the device was not reserved."""
        with self._reservation_lock:
            current = self._current_reservation()
            if current is None:
                return False
            if caller() != current[0]:
                raise self._reserved_error(current, "release()")
            self._reservation = None
            log.info("device '%s' released by %r", self._name, current[0])
            return True

    @expose
    def reservation(self) -> dict[str, Any] | None:
        """The reservation: owner, until (epoch seconds), remaining_s; None if free."""
        current = self._current_reservation()
        if current is None:
            return None
        owner, until = current
        return {"owner": owner, "until": until, "remaining_s": max(0.0, until - time.time())}

    def _current_reservation(self) -> tuple[str, float] | None:
        current = self._reservation
        if current is not None and time.time() >= current[1]:
            # Cleared under the lock, and only if it is still the one found expired: a
            # reserve() that just granted a new lease must not be wiped by this check.
            with self._reservation_lock:
                if self._reservation is current:
                    self._reservation = None
            log.info("reservation of '%s' by %r expired", self._name, current[0])
            current = self._reservation
            if current is not None and time.time() >= current[1]:
                return None
        return current

    def _reservation_admits(self, job: Any) -> BaseException | None:
        """The worker's check before a job starts: DeviceReserved if another owner holds
        the device (None: it may run)."""
        if self._reservation is None:
            return None
        current = self._current_reservation()
        if current is not None and job.owner != current[0]:
            return self._reserved_error(current, f"job {job.id} ({job.method})")
        return None

    def _check_reservation(self, what: str) -> None:
        current = self._current_reservation()
        if current is not None and caller() != current[0]:
            raise self._reserved_error(current, what)

    def _reserved_error(self, current: tuple[str, float], what: str) -> DeviceReserved:
        owner, until = current
        when = time.strftime("%H:%M:%S", time.localtime(until))
        return DeviceReserved(
            f"device '{self._name}' is reserved by {owner!r} until {when} "
            f"({until - time.time():.0f} s left); {what} from another client is refused. "
            f"Ask {owner!r}, or wait until the lease ends.",
            owner=owner,
            until=until,
            device=self._name,
        )


def caller() -> str | None:
    """The owner name the current request presents (the PIOW annotation), if any."""
    value = (current_context.annotations or {}).get(OWNER_ANNOTATION)
    if value is None:
        return None
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return None

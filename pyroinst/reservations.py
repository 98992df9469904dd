"""Reservations: one client holds a device for a while; others' calls are refused.

``Reservable`` is the part of every served device that keeps the reservation (owner,
lease end and the lease's secret) and checks callers against it. A caller names itself
with the request annotation ``PIOW``; ``reserve()`` answers with the lease's secret
(``lease``, 128 random bits as hex), which the holder presents with the annotation
``PILS`` on each call (a pyroinst proxy that reserved does both by itself). Knowing the
owner's name is not enough: a call, a renewal or a ``release()`` without the secret is
refused like anyone else's. Jobs the owner queued under its name before the grant (when
no secret existed yet) still run.

A granted reservation owns the device from that moment: jobs that other owners queued
before the grant are cancelled when it is granted, each with DeviceReserved as its
outcome (``job.result()`` raises it; its status says ``cancelled``), and a queued job
never starts while someone else holds the device. A job already running when the
reservation is granted runs to its end (stopping hardware mid-operation is the owner's
decision: ``job_cancel`` stays open to the job's own client until the grant).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from typing import Any, NamedTuple

from Pyro5.callcontext import current_context
from Pyro5.server import expose

from .errors import DeviceReserved
from .handles import LEASE_ANNOTATION, OWNER_ANNOTATION
from .keys import SHARED_NAME

__all__ = ["Reservable", "Reservation", "caller", "caller_lease", "authenticated_user"]

log = logging.getLogger(__name__)


class Reservation(NamedTuple):
    """Who holds a device (``owner``), until when (epoch seconds), with which secret,
    granted when (epoch seconds)."""

    owner: str
    until: float
    secret: bytes
    granted: float

    def presented_by_caller(self) -> bool:
        """True if the current request presents this reservation's secret."""
        return _matches(caller_lease(), self.secret)

    def admits(self, job: Any) -> bool:
        """True if ``job`` belongs to this reservation: started with its secret, or queued
        under the owner's name before the grant."""
        if _matches(getattr(job, "lease", None), self.secret):
            return True
        return job.owner == self.owner and getattr(job, "created", self.granted) < self.granted


def _matches(presented: bytes | None, secret: bytes) -> bool:
    return presented is not None and hmac.compare_digest(presented, secret)


class Reservable:
    """Mixin for device servants: ``reserve``, ``release``, ``reservation`` and the check."""

    _name: str
    _reservation: Reservation | None = None
    _reservation_lock: threading.RLock
    _worker: Any

    @expose
    def reserve(self, owner: str | None = None, lease_s: float = 60.0) -> dict[str, Any]:
        """Reserve the device for ``owner`` for ``lease_s`` seconds (call again to renew).

        Without ``owner``, the reservation is in the name of the key the caller's
        connection proved (a person's own key; a shared token has no person's name).

        Returns owner, until, remaining_s and ``lease``, the secret the holder presents on
        its calls (a pyroinst proxy keeps and presents it by itself). While reserved,
        other clients' calls and jobs raise DeviceReserved; methods marked @concurrent and
        the job_status/job_wait/job_result/job_list members stay open. Renewing needs the
        lease's secret, as releasing does.
        """
        if owner is None:
            user = authenticated_user()
            if user is None or user == SHARED_NAME:
                raise ValueError("give an owner name: this connection proved no person's own key")
            owner = user
        owner = str(owner)
        if not owner or len(owner) > 128 or not owner.isprintable():
            raise ValueError("owner must be a printable name of 1 to 128 characters")
        lease_s = float(lease_s)
        if not 0 < lease_s <= 7 * 24 * 3600:
            raise ValueError(f"lease_s must be between 0 and 604800 s, got {lease_s:g}")
        with self._reservation_lock:
            current = self._current_reservation()
            if current is not None and not (
                current.owner == owner and current.presented_by_caller()
            ):
                raise self._reserved_error(current, "reserve()")
            now = time.time()
            if current is None:
                granted = Reservation(owner, now + lease_s, secrets.token_bytes(16), now)
            else:
                granted = current._replace(until=now + lease_s)
            self._reservation = granted
            log.info("device '%s' reserved by %r for %g s", self._name, owner, lease_s)
            if current is None:
                refused = self._worker.refuse_queued(
                    granted.admits,
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
            answer = self.reservation()
            assert answer is not None
            return {**answer, "lease": granted.secret.hex()}

    @expose
    def release(self) -> bool:
        """End the caller's reservation (it must present the lease's secret); False if the
        device was not reserved."""
        with self._reservation_lock:
            current = self._current_reservation()
            if current is None:
                return False
            if not current.presented_by_caller():
                raise self._reserved_error(current, "release()")
            self._reservation = None
            log.info("device '%s' released by %r", self._name, current.owner)
            return True

    @expose
    def reservation(self) -> dict[str, Any] | None:
        """The reservation: owner, until (epoch seconds), remaining_s; None if free."""
        current = self._current_reservation()
        if current is None:
            return None
        return {
            "owner": current.owner,
            "until": current.until,
            "remaining_s": max(0.0, current.until - time.time()),
        }

    def _current_reservation(self) -> Reservation | None:
        current = self._reservation
        if current is not None and time.time() >= current.until:
            # Cleared under the lock, and only if it is still the one found expired: a
            # reserve() that just granted a new lease must not be wiped by this check.
            with self._reservation_lock:
                if self._reservation is current:
                    self._reservation = None
            log.info("reservation of '%s' by %r expired", self._name, current.owner)
            current = self._reservation
            if current is not None and time.time() >= current.until:
                return None
        return current

    def _reservation_admits(self, job: Any) -> BaseException | None:
        """The worker's check before a job starts: DeviceReserved if another owner holds
        the device (None: it may run)."""
        if self._reservation is None:
            return None
        current = self._current_reservation()
        if current is not None and not current.admits(job):
            return self._reserved_error(current, f"job {job.id} ({job.method})")
        return None

    def _check_reservation(self, what: str) -> None:
        current = self._current_reservation()
        if current is not None and not current.presented_by_caller():
            raise self._reserved_error(current, what)

    def _reserved_error(self, current: Reservation, what: str) -> DeviceReserved:
        owner, until = current.owner, current.until
        when = time.strftime("%H:%M:%S", time.localtime(until))
        return DeviceReserved(
            f"device '{self._name}' is reserved by {owner!r} until {when} "
            f"({until - time.time():.0f} s left); {what} without its lease is refused (the "
            f"owner's name alone is not enough). Ask {owner!r}, or wait until the lease ends.",
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


def caller_lease() -> bytes | None:
    """The lease secret the current request presents (the PILS annotation), if any."""
    value = (current_context.annotations or {}).get(LEASE_ANNOTATION)
    return None if value is None else bytes(value)


def authenticated_user() -> str | None:
    """The name of the key the current request's connection proved (None without a
    token: nobody proved anything)."""
    return getattr(current_context.client, "_pyroinst_user", None)

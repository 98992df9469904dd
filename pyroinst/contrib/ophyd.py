"""Served devices for bluesky and ophyd (extra ``pyroinst[bluesky]``).

* ``JobStatus(job)``: an ophyd ``Status`` for a pyroinst job: finished when the job is
  done, failed (with the job's error, or ``JobCancelled``) when it fails or is cancelled;
  progress goes to ``watch()`` callbacks; a status that times out cancels the job.
* ``RemoteSignal(dev, "gain")``: a device property (or a getter/setter method pair) as an
  ophyd ``Signal``: ``get``, ``put``, and ``set`` returning a Status.
* ``RemotePositioner(dev, move="move_to", position="position")``: a motor for plans;
  ``set(x)`` starts the move job and returns its ``JobStatus``; ``stop()`` (what a
  ``RunEngine`` calls on pause, stop or abort) cancels the move.
* ``RemoteDetector(dev, acquire="acquire")``: ``trigger()`` starts the acquisition job
  and returns its status; ``read()`` gives its result.

Each takes a ``DeviceProxy`` from ``pyroinst.connect`` (which any thread may use: the
RunEngine's, a status's). An ophyd-async flavour would wrap ``pyroinst.aio`` devices the
same way (awaitable ``set``/``trigger``); it is not here yet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from ophyd import Signal
from ophyd.status import StatusBase

from ..handles import JobHandle

__all__ = ["JobStatus", "RemoteSignal", "RemotePositioner", "RemoteDetector", "POLL"]

log = logging.getLogger(__name__)

#: Seconds between a JobStatus's looks at its job (each a bounded server-side wait).
POLL = 0.1


class JobStatus(StatusBase):
    """The status of a pyroinst job, for bluesky: see the module's docstring."""

    def __init__(self, job: JobHandle, name: str = "", **kwargs: Any) -> None:
        self.job = job
        self.name = name or f"job {job.id}"
        self._watchers: list[Callable[..., None]] = []
        self._started = time.monotonic()
        super().__init__(**kwargs)
        self._follower = threading.Thread(
            target=self._follow, name=f"pyroinst-status-{job.id}", daemon=True
        )
        self._follower.start()

    def _follow(self) -> None:
        try:
            while not self.done:
                if self.job.wait(POLL):
                    break
                self._progress(self.job.progress())
            if self.done:
                return  # timed out or failed meanwhile
            try:
                self.job.result(0)
            except Exception as exc:  # noqa: BLE001 - the job's own error, handed on
                self.set_exception(exc)
                return
            self._progress(1.0)
            self.set_finished()
        except Exception as exc:  # noqa: BLE001 - the server went away: the status fails
            if not self.done:
                self.set_exception(exc)

    def _progress(self, progress: float) -> None:
        elapsed = time.monotonic() - self._started
        for watcher in list(self._watchers):
            try:
                watcher(
                    name=self.name,
                    current=progress,
                    initial=0.0,
                    target=1.0,
                    unit="",
                    precision=3,
                    fraction=1.0 - progress,  # ophyd's fraction is what remains
                    time_elapsed=elapsed,
                    time_remaining=None,
                )
            except Exception:  # noqa: BLE001 - a watcher never stops the status
                log.exception("status watcher of %s failed", self.name)

    def watch(self, func: Callable[..., None]) -> None:
        """Call ``func`` with the job's progress (ophyd's watcher keywords) as it runs."""
        self._watchers.append(func)

    def stop(self) -> None:
        """Cancel the job (the status then fails with JobCancelled)."""
        try:
            self.job.cancel()
        except Exception as exc:  # noqa: BLE001 - stopping never raises into a plan
            log.warning("could not cancel %s: %s", self.name, exc)

    def _handle_failure(self) -> None:
        # Timed out (or failed otherwise): the job is not left running.
        try:
            self.job.cancel()
        except Exception as exc:  # noqa: BLE001 - the failure is reported either way
            log.warning("could not cancel %s: %s", self.name, exc)

    def __repr__(self) -> str:
        # bluesky puts this in a failed run's stop document: say what failed.
        error = self.exception(timeout=0) if self.done and not self.success else None
        why = f": {type(error).__name__}: {error}" if error is not None else ""
        return f"<JobStatus {self.name} done={self.done} success={self.success}{why}>"


def _status_of(value: Any, name: str) -> StatusBase:
    if isinstance(value, JobHandle):
        return JobStatus(value, name)
    status = StatusBase()
    status.set_finished()
    return status


class RemoteSignal(Signal):
    """A device's property (or ``getter``/``setter`` methods) as an ophyd Signal."""

    def __init__(
        self,
        device: Any,
        member: str | None = None,
        *,
        getter: str | None = None,
        setter: str | None = None,
        name: str = "",
        **kwargs: Any,
    ) -> None:
        self.remote = device
        self._member = member
        self._getter = getter
        self._setter = setter
        super().__init__(name=name or member or getter or "signal", **kwargs)

    def get(self, **kwargs: Any) -> Any:
        """The value now (one call to the device)."""
        if self._getter:
            value = getattr(self.remote, self._getter)()
        else:
            value = getattr(self.remote, str(self._member))
        self._readback = value
        return value

    def put(self, value: Any, **kwargs: Any) -> None:
        """Write ``value`` to the device (one call)."""
        if self._setter:
            getattr(self.remote, self._setter)(value)
        elif self._member:
            setattr(self.remote, self._member, value)
        else:
            raise PermissionError(f"signal {self.name} is read-only")
        old = self._readback
        self._readback = value
        self._run_subs(sub_type=self.SUB_VALUE, old_value=old, value=value, timestamp=time.time())


class _Readable:
    """What bluesky reads of one value."""

    parent = None

    def __init__(self, device: Any, name: str, source: str) -> None:
        self.remote = device
        self.name = name
        self._source = source
        self._job: JobHandle | None = None

    @property
    def hints(self) -> dict[str, Any]:
        """The field a plot or table shows."""
        return {"fields": [self.name]}

    def _value(self) -> Any:
        raise NotImplementedError

    def read(self) -> dict[str, dict[str, Any]]:
        """``{name: {"value", "timestamp"}}``."""
        return {self.name: {"value": self._value(), "timestamp": time.time()}}

    def describe(self) -> dict[str, dict[str, Any]]:
        """The data key of the value (dtype and shape from a reading)."""
        value = np.asarray(self._value())
        dtype = "array" if value.ndim else ("number" if value.dtype.kind in "biuf" else "string")
        return {self.name: {"source": self._source, "dtype": dtype, "shape": list(value.shape)}}

    def read_configuration(self) -> dict[str, Any]:
        """No configuration is read."""
        return {}

    def describe_configuration(self) -> dict[str, Any]:
        """No configuration is read."""
        return {}

    def stop(self, *, success: bool = False) -> None:
        """Cancel the job this object started, if it still runs."""
        job = self._job
        if job is not None:
            try:
                job.cancel()
            except Exception as exc:  # noqa: BLE001 - stopping never raises into a plan
                log.warning("could not cancel %s: %s", job.id, exc)


class RemotePositioner(_Readable):
    """A motor: ``set`` runs the device's move job; the position is read as a property
    (or a method with ``position_is_method=True``)."""

    def __init__(
        self,
        device: Any,
        move: str = "move_to",
        position: str = "position",
        name: str = "",
        position_is_method: bool = False,
    ) -> None:
        label = getattr(device, "_pyroinst_name", None) or "motor"
        super().__init__(device, name or label, f"pyroinst:{label}.{position}")
        self._move = move
        self._position = position
        self._method = position_is_method

    @property
    def position(self) -> Any:
        """The position now."""
        return self._value()

    def _value(self) -> Any:
        member = getattr(self.remote, self._position)
        return member() if self._method else member

    def set(self, value: Any, **kwargs: Any) -> StatusBase:
        """Start moving to ``value``; the status finishes when the move job does."""
        started = getattr(self.remote, self._move)(value)
        if isinstance(started, JobHandle):
            self._job = started
        return _status_of(started, f"{self.name} -> {value}")


class RemoteDetector(_Readable):
    """A detector: ``trigger`` runs the device's acquisition job; ``read`` its result."""

    def __init__(self, device: Any, acquire: str = "acquire", name: str = "") -> None:
        label = getattr(device, "_pyroinst_name", None) or "detector"
        super().__init__(device, name or label, f"pyroinst:{label}.{acquire}")
        self._acquire = acquire
        self._last: Any = None

    def trigger(self) -> StatusBase:
        """Start an acquisition; the status finishes when its job does."""
        started = getattr(self.remote, self._acquire)()
        if isinstance(started, JobHandle):
            self._job = started
            self._last = None
        else:
            self._last = started
        return _status_of(started, f"{self.name} acquisition")

    def _value(self) -> Any:
        if self._last is None and self._job is not None:
            self._last = self._job.result(0)
        if self._last is None:  # describe() before any trigger: acquire once
            self.trigger().wait(timeout=60)
            return self._value()
        return self._last

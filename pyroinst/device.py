"""Wrapping a driver instance in a Pyro5-exposed object.

For each driver class a servant class is generated: one exposed forwarder per public
method of the driver, plus the reserved members every device has (``describe``, ``ping``,
``job_start``, ``job_status``, ``job_wait``, ``job_result``, ``job_cancel``, ``job_list``).

What is remotely reachable:

* public methods (no leading ``_``) of the driver class and its bases, except ``close``,
  which only the server calls, at shutdown;
* public properties, read (and written, if they have a setter) through the device lock:
  ``proxy.temperature`` works as it does locally;
* nothing else: plain instance attributes, ``_private`` and dunder names stay on the server.

Every plain call takes the per-device lock (waiting up to the device's ``lock_timeout``,
then DeviceBusy), except methods marked ``@concurrent``. Methods marked ``@job`` (or named
in ``add_device(..., jobs=...)``) return a JobHandle at once and run on the device's worker.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from Pyro5.callcontext import current_context
from Pyro5.server import expose

from . import direct
from .audit import AuditLog, audited
from .buffers import (
    DEFAULT_BYTES,
    DEFAULT_ITEMS,
    Delivered,
    check_read,
    continued_cursor,
    remember_cursor,
)
from .channels import Channels
from .errors import (
    DeviceClosed,
    SignatureError,
)
from .front import to_worker
from .handles import JobHandle
from .jobs import Job, transportable
from .members import (
    HIDDEN_NAMES,
    RESERVED_NAMES,
    binding_problems,
    describe_device,
    signature_of,
)
from .reservations import Reservable, caller, caller_lease
from .retention import JobStore
from .wireform import sendable
from .workers import DEFAULT_MAX_QUEUED_JOBS, DeviceLock, DeviceWorker

__all__ = ["RESERVED_NAMES", "DeviceServant", "describe_device"]

log = logging.getLogger(__name__)

# Signatures are looked up on every call; computing one (eval_str) costs more than the call.
_context = current_context
_signatures: dict[tuple[type, str], inspect.Signature | None] = {}
_MISSING: Any = object()


def _read(buffer: Any, key: str, cursor: int, timeout: float, max_items: int, finish: Any) -> Any:
    """A stream read of ``buffer`` for the connection being served: its answer (made by
    ``finish``), or ANSWERED once the publishing thread sent it (``pyroinst.direct``).
    Notes where this connection's read ended (for reads kept in flight)."""
    answerer = direct.answerer(finish)
    answer = buffer.read(continued_cursor(key, cursor), timeout, max_items, answerer)
    if type(answer) is Delivered:
        remember_cursor(key, answer.answer["cursor"])
        answerer.send_rest()  # (what the socket did not take at once)
        return direct.ANSWERED
    remember_cursor(key, answer["cursor"])
    return finish(answer)


class DeviceServant(Reservable):
    """The exposed object behind one device name; its reserved members are the same for all."""

    #: Its exposed methods are its class's (pyroinst.dispatch looks each up once per class).
    _pyroinst_servant = True
    _pyroinst_jobs: frozenset[str] = frozenset()
    _pyroinst_concurrent: frozenset[str] = frozenset()
    _pyroinst_members: dict[str, Any] | None = None
    _pyroinst_hidden: dict[str, str] = {}  # noqa: RUF012 - set per servant class
    _pyroinst_properties: frozenset[str] = frozenset()
    _pyroinst_monitors: tuple[tuple[str, float], ...] = ()
    #: The server's audit log (None: no audit), set by InstServer.add_device.
    _audit: AuditLog | None = None

    def __init__(
        self,
        device: Any,
        name: str,
        store: JobStore,
        lock_timeout: float | None,
        stream_bounds: tuple[int, int] = (DEFAULT_ITEMS, DEFAULT_BYTES),
        max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS,
    ) -> None:
        self._device = device
        self._name = name
        self._store = store
        self._lock_timeout = lock_timeout
        self._lock = DeviceLock(name)
        self._worker = DeviceWorker(
            name, self._lock, store, max_queued_jobs, admit=self._reservation_admits
        )
        self._stream_bounds = stream_bounds
        self._channels = Channels(device, name, self._lock, stream_bounds)
        for monitored, period in self._pyroinst_monitors:
            self._channels.add_monitor(monitored, period)
        self._uri = ""
        self._closed = False
        self._reservation: tuple[str, float] | None = None
        self._reservation_lock = threading.RLock()  # _current_reservation nests

    # -- calling the driver ----------------------------------------------------------------
    def _bound(self, method: str) -> Callable[..., Any]:
        return getattr(self._device, method)

    def _check_args(self, method: str, func: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        key = (type(self._device), method)
        sig = _signatures.get(key, _MISSING)
        if sig is _MISSING:
            sig = _signatures[key] = signature_of(func)
        if sig is None:
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            problems = binding_problems(sig, args, kwargs) or [str(exc)]
            raise SignatureError(
                f"{self._name}.{method}{sig}: {'; '.join(problems)}", method=method
            ) from None

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        func = self._bound(method)
        if self._reservation is not None and method not in self._pyroinst_concurrent:
            self._check_reservation(f"{method}()")
        if method in self._pyroinst_jobs:
            self._check_args(method, func, args, kwargs)
            return self._submit(method, func, args, kwargs)
        if method in self._pyroinst_concurrent:
            return self._run_plain(method, func, args, kwargs)
        return self._locked(method, func, args, kwargs)

    def _locked(
        self,
        method: str,
        func: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        holder: str | None = None,
    ) -> Any:
        """Run a plain call under the device lock (DeviceBusy after ``lock_timeout``)."""
        lock = self._lock
        if not lock.acquire(holder or method, self._lock_timeout):
            raise lock.busy_error(holder or f"call {method}()", self._lock_timeout or 0.0)
        try:
            return self._run_plain(method, func, args, kwargs)
        finally:
            lock.release()

    def _run_plain(self, method: str, func: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if self._closed:
            raise self._closed_error(f"{method}()")
        if _context.annotations:
            # Calls the driver makes to other devices carry only what they set themselves,
            # not this request's annotations (owner, user annotations).
            _context.annotations = {}
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            raise self._translate(method, func, args, kwargs, exc) from None
        return self._sendable(method, result)

    def _closed_error(self, what: str) -> DeviceClosed:
        return DeviceClosed(
            f"device '{self._name}' is closed: its server is shutting down (or removed it); "
            f"{what} was not run. Try again once the server is back.",
            device=self._name,
        )

    def _translate(
        self, method: str, func: Callable[..., Any], args: tuple, kwargs: dict, exc: Exception
    ) -> BaseException:
        """The exception to send for ``exc`` raised by a driver method."""
        if isinstance(exc, DeviceClosed):
            return exc
        log.debug("%s.%s raised %r", self._name, method, exc)
        if isinstance(exc, TypeError):
            # Binding is checked only now: on every call it would cost more than the call.
            try:
                self._check_args(method, func, args, kwargs)
            except SignatureError as mismatch:
                return mismatch
        return transportable(exc)

    def _call_property(self, name: str, op: str, value: Any = None) -> Any:
        if self._reservation is not None:
            self._check_reservation(f"property {name}")

        def access() -> Any:
            if self._closed:
                raise self._closed_error(f"property {name}")
            if _context.annotations:
                _context.annotations = {}
            if op == "get":
                return getattr(self._device, name)
            setattr(self._device, name, value)
            return None

        return self._locked(name, access, (), {}, holder=f"property {name}")

    def _sendable(self, method: str, result: Any) -> Any:
        # Arrays stay arrays: the serializer decides how they travel.
        return sendable(result, lambda: f"{self._name}.{method}() returned")

    def _submit(
        self, method: str, func: Callable[..., Any], args: tuple, kwargs: dict
    ) -> JobHandle:
        job = Job(
            self._name,
            method,
            func,
            tuple(args),
            dict(kwargs),
            concurrent=method in self._pyroinst_concurrent,
            job_id=self._store.new_id(),
            stream_items=self._stream_bounds[0],
            stream_bytes=self._stream_bounds[1],
            owner=caller(),
            lease=caller_lease(),
        )
        self._worker.submit(job)
        to_worker()  # the job's thread and this connection's run side by side from now on
        log.debug("job %s (%s.%s) queued", job.id, self._name, method)
        return JobHandle(job.id, self._name, self._uri)

    # -- reserved members -----------------------------------------------------------------
    @expose
    @audited("read")
    def describe(self) -> dict[str, Any]:
        """The device's class, docstring, methods (signature, doc, job flag) and properties."""
        return describe_device(
            self._device,
            self._name,
            self._pyroinst_jobs,
            self._pyroinst_concurrent,
            self._pyroinst_members,
            self._pyroinst_hidden,
        )

    @expose
    @audited("read")
    def ping(self) -> bool:
        """True: the device's server answers (does not touch the instrument)."""
        return True

    @expose
    @audited("write")
    def job_start(self, method: str, *args: Any, **kwargs: Any) -> JobHandle:
        """Run any public method of the device as a background job; returns its JobHandle."""
        method = str(method)
        if self._reservation is not None:
            self._check_reservation(f"job_start({method!r})")
        if (
            method.startswith("_")
            or method in RESERVED_NAMES
            or method in HIDDEN_NAMES
            or method not in type(self).__dict__
            or method in self._pyroinst_properties
        ):
            methods = sorted(
                n
                for n in type(self).__dict__
                if not n.startswith("_")
                and n not in self._pyroinst_properties
                and n not in RESERVED_NAMES
            )
            raise AttributeError(
                f"device '{self._name}' has no method {method!r} that can run as a job; "
                f"its methods: {', '.join(methods)}"
            )
        func = self._bound(method)
        self._check_args(method, func, args, kwargs)
        return self._submit(method, func, args, kwargs)

    @expose
    @audited("read", job_argument=True)
    def job_status(self, job_id: str) -> dict[str, Any]:
        """The status dict of a job: id, method, state, progress, message, times, error.

        A queued job's dict also says what it waits for (``waiting_for``).
        """
        job = self._store.get(job_id, self._name)
        status = job.status()
        if status["state"] == "queued":
            status["waiting_for"] = self._worker.waiting_for(job)
        return status

    @expose
    @audited("read", job_argument=True)
    def job_wait(self, job_id: str, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for a job to finish; True if it has finished."""
        to_worker()
        return self._store.get(job_id, self._name).wait(timeout)

    @expose
    @audited("read", job_argument=True)
    def job_result(self, job_id: str, timeout: float | None = None) -> Any:
        """A job's result (waiting up to ``timeout``); re-raises its error. Readable repeatedly."""
        job = self._store.get(job_id, self._name)
        to_worker()
        return self._sendable(job.method, job.outcome(timeout))

    @expose
    @audited("write", job_argument=True)
    def job_cancel(self, job_id: str) -> bool:
        """Cancel a job: a queued one never runs, a running one is asked to stop.

        Returns False (no error) if the job had already finished.
        """
        job = self._store.get(job_id, self._name)
        if self._reservation is not None:
            self._check_reservation("job_cancel()")
        return self._worker.cancel(job)

    @expose
    @audited("read")
    def job_list(self) -> list[dict[str, Any]]:
        """The status dicts of this device's kept jobs, newest first."""
        return [job.status() for job in self._store.jobs_of(self._name)]

    # -- live data ------------------------------------------------------------------------
    @expose
    @audited("read", job_argument=True)
    def job_stream(
        self, job_id: str, cursor: int = 0, timeout: float = 1.0, max_items: int = 1000
    ) -> dict[str, Any]:
        """The items a job published, from ``cursor`` on (-1: the next one published; -2:
        where this connection's last read of it ended, for reads kept in flight).

        Waits up to ``timeout`` s for a first item. Returns ``{"items", "cursor" (where to
        read next), "dropped" (items lost before this read), "done" (the job ended and
        every item was read), "run"}``. Never takes the device lock.
        """
        cursor, timeout, max_items = check_read(cursor, timeout, max_items)
        job = self._store.get(job_id, self._name)
        key = f"job {job.id}"
        run = self._store.run_id

        def finish(answer: dict[str, Any]) -> dict[str, Any]:
            answer["run"] = run
            return answer

        return _read(job.stream, key, cursor, timeout, max_items, finish)

    @expose
    @audited("read")
    def channel_read(
        self, channel: str, cursor: int = -1, timeout: float = 1.0, max_items: int = 1000
    ) -> dict[str, Any]:
        """``[timestamp, value]`` items of a device channel from ``cursor`` on (-1: the next).

        As ``job_stream``; ``done`` is always False. Never takes the device lock.
        """
        cursor, timeout, max_items = check_read(cursor, timeout, max_items)
        buffer = self._channels.get(str(channel)).buffer
        key = f"channel {self._name} {channel}"
        run = self._store.run_id

        def finish(answer: dict[str, Any]) -> dict[str, Any]:
            answer["items"] = [list(item) for item in answer["items"]]
            answer["run"] = run
            return answer

        return _read(buffer, key, cursor, timeout, max_items, finish)

    @expose
    @audited("read")
    def channels(self) -> list[dict[str, Any]]:
        """The device's channels: name, kind (monitor, published), period, last_time,
        published (items so far), skipped (monitor beats skipped while busy)."""
        return self._channels.infos()

    # Reservations are changes (reserve, release); reading one is a read.
    reserve = audited("write")(Reservable.reserve)
    release = audited("write")(Reservable.release)
    reservation = audited("read")(Reservable.reservation)

    # -- server side only ---------------------------------------------------------------------
    def _start(self) -> None:
        """Served from now on: monitors run, ``pyroinst.publish`` reaches the channels."""
        self._channels.start()

    def _retire(self, timeout: float) -> None:
        """No longer served: the monitors stop and the worker stops (cancelling jobs); the
        driver stays open (``remove_device(close=False)`` hands it back to its owner)."""
        self._channels.stop(timeout)
        if not self._worker.stop(timeout):
            log.warning("device '%s': a job did not stop within %g s", self._name, timeout)

    def _shutdown(self, timeout: float) -> None:
        """Retire, then close the driver under its lock (once)."""
        if self._closed:
            return
        self._closed = True
        self._retire(timeout)
        close = getattr(self._device, "close", None)
        if not callable(close):
            return
        got = self._lock.acquire("shutdown", timeout)
        if not got:
            log.warning(
                "device '%s' still busy with %s; closing it anyway",
                self._name,
                self._lock.describe_holder(),
            )
        try:
            close()
        except Exception:
            log.exception("device '%s': close() raised", self._name)
        finally:
            if got:
                self._lock.release()

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
from collections.abc import Callable, Iterable
from typing import Any

from Pyro5.callcontext import current_context
from Pyro5.server import expose

from .audit import AuditLog, audited
from .buffers import DEFAULT_BYTES, DEFAULT_ITEMS, check_read
from .channels import Channels, check_monitor, monitor_period
from .errors import (
    DeviceClosed,
    DeviceDefinitionError,
    SignatureError,
)
from .handles import JobHandle
from .jobs import (
    DeviceLock,
    DeviceWorker,
    Job,
    is_concurrent,
    is_job,
    transportable,
)
from .members import (
    HIDDEN_NAMES,
    RESERVED_NAMES,
    binding_problems,
    describe_device,
    function_of,
    public_members,
    signature_of,
)
from .reservations import Reservable
from .retention import JobStore
from .serialization import sendable

__all__ = ["RESERVED_NAMES", "DeviceServant", "make_servant", "describe_device"]

log = logging.getLogger(__name__)

# Signatures are looked up on every call; computing one (eval_str) costs more than the call.
_signatures: dict[tuple[type, str], inspect.Signature | None] = {}
_MISSING: Any = object()


class DeviceServant(Reservable):
    """The exposed object behind one device name; its reserved members are the same for all."""

    _pyroinst_jobs: frozenset[str] = frozenset()
    _pyroinst_concurrent: frozenset[str] = frozenset()
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
    ) -> None:
        self._device = device
        self._name = name
        self._store = store
        self._lock_timeout = lock_timeout
        self._lock = DeviceLock(name)
        self._worker = DeviceWorker(name, self._lock, store)
        self._stream_bounds = stream_bounds
        self._channels = Channels(device, name, self._lock, stream_bounds)
        for monitored, period in self._pyroinst_monitors:
            self._channels.add_monitor(monitored, period)
        self._uri = ""
        self._closed = False
        self._reservation: tuple[str, float] | None = None
        self._reservation_lock = threading.Lock()

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
        )
        self._worker.submit(job)
        log.debug("job %s (%s.%s) queued", job.id, self._name, method)
        return JobHandle(job.id, self._name, self._uri)

    # -- reserved members -----------------------------------------------------------------
    @expose
    @audited("read")
    def describe(self) -> dict[str, Any]:
        """The device's class, docstring, methods (signature, doc, job flag) and properties."""
        return describe_device(
            self._device, self._name, self._pyroinst_jobs, self._pyroinst_concurrent
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
        return self._store.get(job_id, self._name).wait(timeout)

    @expose
    @audited("read", job_argument=True)
    def job_result(self, job_id: str, timeout: float | None = None) -> Any:
        """A job's result (waiting up to ``timeout``); re-raises its error. Readable repeatedly."""
        job = self._store.get(job_id, self._name)
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
        """The items a job published, from ``cursor`` on (-1: the next one published).

        Waits up to ``timeout`` s for a first item. Returns ``{"items", "cursor" (where to
        read next), "dropped" (items lost before this read), "done" (the job ended and
        every item was read), "run"}``. Never takes the device lock.
        """
        cursor, timeout, max_items = check_read(cursor, timeout, max_items)
        job = self._store.get(job_id, self._name)
        answer = job.stream.read(cursor, timeout, max_items)
        answer["run"] = self._store.run_id
        return answer

    @expose
    @audited("read")
    def channel_read(
        self, channel: str, cursor: int = -1, timeout: float = 1.0, max_items: int = 1000
    ) -> dict[str, Any]:
        """``[timestamp, value]`` items of a device channel from ``cursor`` on (-1: the next).

        As ``job_stream``; ``done`` is always False. Never takes the device lock.
        """
        cursor, timeout, max_items = check_read(cursor, timeout, max_items)
        answer = self._channels.get(str(channel)).buffer.read(cursor, timeout, max_items)
        answer["items"] = [list(item) for item in answer["items"]]
        answer["run"] = self._store.run_id
        return answer

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

    def _shutdown(self, timeout: float) -> None:
        """Stop the worker (cancelling jobs), then close the driver under its lock (once)."""
        if self._closed:
            return
        self._closed = True
        self._channels.stop(timeout)
        if not self._worker.stop(timeout):
            log.warning("device '%s': a job did not stop within %g s", self._name, timeout)
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


_context = current_context
_PLAIN_RESULTS = frozenset({str, int, float, bool, type(None), bytes, complex})


def _make_forwarder(
    name: str, doc: str | None, plain: bool, concurrent: bool
) -> Callable[..., Any]:
    if not plain:  # jobs and @concurrent methods

        def call(self: DeviceServant, args: tuple, kwargs: dict) -> Any:
            return self._call(name, args, kwargs)

    else:
        # The hot path of every plain call, flattened: it is most of pyroinst's overhead.
        def call(self: DeviceServant, args: tuple, kwargs: dict) -> Any:
            func = getattr(self._device, name)
            if self._reservation is not None:
                self._check_reservation(f"{name}()")
            lock = self._lock
            if not lock.acquire(name, self._lock_timeout):
                raise lock.busy_error(f"call {name}()", self._lock_timeout or 0.0)
            try:
                if self._closed:
                    raise self._closed_error(f"{name}()")
                if _context.annotations:
                    _context.annotations = {}  # the driver's own calls carry only their own
                result = func(*args, **kwargs)
            except Exception as exc:
                raise self._translate(name, func, args, kwargs, exc) from None
            finally:
                lock.release()
            if type(result) in _PLAIN_RESULTS:
                return result
            return self._sendable(name, result)

    def forwarder(self: DeviceServant, *args: Any, **kwargs: Any) -> Any:
        audit = self._audit
        if audit is None or (concurrent and not audit.reads):
            return call(self, args, kwargs)
        return audit.run(self._name, name, lambda: call(self, args, kwargs), args, kwargs)

    forwarder.__name__ = forwarder.__qualname__ = name
    forwarder.__doc__ = doc
    return expose(forwarder)


def _make_property(name: str, prop: property) -> property:
    def fget(self: DeviceServant) -> Any:
        audit = self._audit
        if audit is None or not audit.reads:
            return self._call_property(name, "get")
        return audit.run(self._name, f"{name} (read)", lambda: self._call_property(name, "get"))

    fget.__name__ = name
    fset = None
    if prop.fset is not None:

        def fset(self: DeviceServant, value: Any) -> None:
            audit = self._audit
            if audit is None:
                self._call_property(name, "set", value)
                return
            audit.run(
                self._name,
                f"{name} (write)",
                lambda: self._call_property(name, "set", value),
                (value,),
            )

        fset.__name__ = name
    return expose(property(fget, fset, doc=prop.__doc__))


_servant_classes: dict[tuple[type, frozenset[str]], type[DeviceServant]] = {}
_classes_lock = threading.Lock()


def _job_names(cls: type, members: dict[str, Any], extra: Iterable[str]) -> frozenset[str]:
    names = {
        n for n, m in members.items() if not isinstance(m, property) and is_job(function_of(m))
    }
    for name in extra:
        member = members.get(name)
        if member is None or isinstance(member, property):
            raise DeviceDefinitionError(
                f"jobs= names {name!r}, which is not a public method of {cls.__name__}",
                method=name,
            )
        names.add(name)
    return frozenset(names)


def make_servant(
    device: Any,
    name: str,
    store: JobStore,
    jobs: Iterable[str] | None = None,
    lock_timeout: float | None = None,
    stream_bounds: tuple[int, int] = (DEFAULT_ITEMS, DEFAULT_BYTES),
) -> DeviceServant:
    """The exposed servant for ``device`` (DeviceDefinitionError if it cannot be served)."""
    cls = type(device)
    members = public_members(cls)
    clash = sorted(set(members) & RESERVED_NAMES)
    if clash:
        raise DeviceDefinitionError(
            f"cannot serve {cls.__name__} as '{name}': its method(s) {', '.join(clash)} "
            f"collide with pyroinst's reserved names ({', '.join(sorted(RESERVED_NAMES))}); "
            "rename them or wrap the driver",
            method=clash[0],
        )
    job_names = _job_names(cls, members, jobs or ())
    key = (cls, job_names)
    with _classes_lock:
        servant_cls = _servant_classes.get(key)
        if servant_cls is None:
            namespace: dict[str, Any] = {}
            for member_name, member in members.items():
                if isinstance(member, property):
                    namespace[member_name] = _make_property(member_name, member)
                else:
                    func = function_of(member)
                    concurrent = is_concurrent(func)
                    plain = member_name not in job_names and not concurrent
                    namespace[member_name] = _make_forwarder(
                        member_name,
                        func.__doc__,
                        plain,
                        concurrent and member_name not in job_names,
                    )
            namespace["_pyroinst_jobs"] = job_names
            namespace["_pyroinst_concurrent"] = frozenset(
                n
                for n, m in members.items()
                if not isinstance(m, property) and is_concurrent(function_of(m))
            )
            namespace["_pyroinst_properties"] = frozenset(
                n for n, m in members.items() if isinstance(m, property)
            )
            namespace["_pyroinst_monitors"] = tuple(
                (n, check_monitor(cls, n, function_of(m)))
                for n, m in sorted(members.items())
                if not isinstance(m, property) and monitor_period(function_of(m)) is not None
            )
            namespace["__doc__"] = cls.__doc__
            servant_cls = type(f"{cls.__name__}Servant", (DeviceServant,), namespace)
            _servant_classes[key] = servant_cls
    return servant_cls(device, name, store, lock_timeout, stream_bounds)

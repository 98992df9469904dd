"""The servant class of a driver class: one exposed forwarder per public method and property.

``make_servant(device, name, ...)`` builds (once per driver class and set of job names) a
subclass of ``DeviceServant`` whose members forward to the driver: plain methods under
the device lock (the hot path of every call, flattened), jobs and ``@concurrent`` methods
through ``DeviceServant._call``, properties through the lock too; each through the
server's audit log when it has one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from Pyro5.callcontext import current_context
from Pyro5.server import expose

from .buffers import DEFAULT_BYTES, DEFAULT_ITEMS
from .channels import check_monitor, monitor_period
from .device import RESERVED_NAMES, DeviceServant
from .errors import DeviceDefinitionError
from .jobs import is_concurrent, is_job
from .members import Extra, function_of
from .offering import Offer, hidden_members, offered_members
from .retention import JobStore
from .workers import DEFAULT_MAX_QUEUED_JOBS

__all__ = ["make_servant"]

_context = current_context
_PLAIN_RESULTS = frozenset({str, int, float, bool, type(None), bytes, complex})


def _make_forwarder(
    name: str, doc: str | None, plain: bool, concurrent: bool, extra: Extra | None = None
) -> Callable[..., Any]:
    if not plain:  # jobs and @concurrent methods

        def call(self: DeviceServant, args: tuple, kwargs: dict) -> Any:
            return self._call(name, args, kwargs)

    else:
        # The hot path of every plain call, flattened: it is most of pyroinst's overhead.
        def call(self: DeviceServant, args: tuple, kwargs: dict) -> Any:
            func = getattr(self._device, name) if extra is None else extra.bind(self._device)
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
    else:

        def fset(self: DeviceServant, value: Any) -> None:
            # Without a setter Pyro5 would say "unexposed or unknown remote attribute".
            raise AttributeError(
                f"property {name!r} of device '{self._name}' is read-only: it can be read, not set"
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
    max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS,
    offer: Offer | None = None,
) -> DeviceServant:
    """The exposed servant for ``device`` (DeviceDefinitionError if it cannot be served);
    ``offer``: which members it offers (see ``pyroinst.offering``)."""
    cls = type(device)
    offer = offer or Offer()
    members = offered_members(cls, offer)
    clash = sorted(set(members) & RESERVED_NAMES)
    if clash:
        raise DeviceDefinitionError(
            f"cannot serve {cls.__name__} as '{name}': its method(s) {', '.join(clash)} "
            f"collide with pyroinst's reserved names ({', '.join(sorted(RESERVED_NAMES))}); "
            "rename them or wrap the driver",
            method=clash[0],
        )
    job_names = _job_names(cls, members, jobs or ())
    key = (cls, job_names, offer)
    with _classes_lock:
        servant_cls = _servant_classes.get(key)
        if servant_cls is None:
            namespace: dict[str, Any] = {}
            for member_name, member in members.items():
                if isinstance(member, property):
                    namespace[member_name] = _make_property(member_name, member)
                elif isinstance(member, Extra):
                    namespace[member_name] = _make_forwarder(
                        member_name, member.__doc__, True, False, member
                    )
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
            namespace["_pyroinst_members"] = dict(members)
            namespace["_pyroinst_hidden"] = hidden_members(cls, offer)
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
    return servant_cls(device, name, store, lock_timeout, stream_bounds, max_queued_jobs)

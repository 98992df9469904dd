"""The exceptions pyroinst raises, registered with Pyro5 so a client gets the real type.

The tree::

    PyroinstError
    ├── DeviceNotFound          (also LookupError) no such device in the name server
    ├── DeviceUnreachable       (also ConnectionError) its server does not answer
    ├── CallTimeout             (also TimeoutError) no reply in time from a server that
    │                           still answers (a slow call: raise the timeout, or a job)
    ├── ConnectionLost          (also ConnectionError) the connection broke during a call
    ├── ServerBusy              the server refused a connection: limits (threadpool_size,
    │                           max_connections_per_host) reached
    ├── ClientBusy              every connection a proxy may open is in a call of another
    │                           thread (connect(max_connections=))
    ├── AuthenticationFailed    (also Pyro5 CommunicationError) wrong or missing token, or a
    │                           server that could not prove it knows the lab's token
    ├── DeviceReserved          another client holds a reservation on the device
    ├── NameServerNotFound      no name server answered at the address asked
    ├── NameInUse               a device name is held already (same server or a live one)
    ├── DeviceDefinitionError   add_device() refused a device (reserved names, bad jobs=)
    ├── DeviceBusy              the device lock was not free within lock_timeout
    ├── DeviceClosed            the device was closed (its server is shutting down)
    ├── ChannelNotFound         (also LookupError) no such channel on the device
    ├── MonitorError            a monitored method failed (a channel item, not raised)
    ├── NotSerializableError    a value cannot be sent (also TypeError)
    ├── SignatureError          arguments that do not fit the method (also TypeError)
    ├── MessageTooLarge         a response larger than Pyro5's MAX_MESSAGE_SIZE
    ├── MessageRefused          (also Pyro5 ProtocolError) a message refused unread: marshal,
    │                           compressed or oversized before the proof, a handshake
    │                           answer in another serializer
    ├── RemoteError             a driver raised an exception class the client cannot import
    ├── JobError
    │   ├── JobNotFound         (also LookupError) unknown or expired job id
    │   ├── JobCancelled        the job was cancelled
    │   └── JobTimeout          (also TimeoutError) the job did not finish in time
    ├── DeviceError             raised by drivers talking to hardware
    │   ├── DeviceTimeout       (also TimeoutError) no (complete) reply in time
    │   ├── DeviceConnectionError (also ConnectionError) port missing or lost
    │   ├── ResponseError       a reply that does not decode or parse
    │   └── InstrumentError     the instrument reported an error (code, description)
    └── ConfigurationError      bad settings (lab file, environment)

A pyroinst exception carries its message as its only argument and any extra facts as
attributes, so it survives every Pyro5 serializer and is rebuilt with its own type by a
client that imports pyroinst.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
from typing import Any

import Pyro5.errors

__all__ = [
    "PyroinstError",
    "DeviceNotFound",
    "DeviceUnreachable",
    "CallTimeout",
    "ConnectionLost",
    "ServerBusy",
    "ClientBusy",
    "AuthenticationFailed",
    "DeviceReserved",
    "NameServerNotFound",
    "NameInUse",
    "DeviceDefinitionError",
    "DeviceBusy",
    "DeviceClosed",
    "ChannelNotFound",
    "MonitorError",
    "NotSerializableError",
    "SignatureError",
    "MessageTooLarge",
    "MessageRefused",
    "RemoteError",
    "JobError",
    "JobNotFound",
    "JobCancelled",
    "JobTimeout",
    "DeviceError",
    "DeviceTimeout",
    "DeviceConnectionError",
    "ResponseError",
    "InstrumentError",
    "ConfigurationError",
]


class PyroinstError(Exception):
    """Base class of every pyroinst exception; extra keyword arguments become attributes."""

    def __init__(self, message: str = "", **attrs: Any) -> None:
        super().__init__(message)
        for key, value in attrs.items():
            setattr(self, key, value)

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else ""


class DeviceNotFound(PyroinstError, LookupError):
    """No device of that name is registered in the name server that was asked."""


class DeviceUnreachable(PyroinstError, builtins.ConnectionError):
    """The device is registered, but its server did not answer (within the retry time)."""


class CallTimeout(PyroinstError, builtins.TimeoutError):
    """A call got no reply within the proxy's timeout, though its server still answers a
    ping: the call is still running there, or the device is slow. Attributes: ``device``,
    ``address``. The call was not re-sent."""


class ConnectionLost(PyroinstError, builtins.ConnectionError):
    """The connection broke during a call: it may or may not have run; it was not re-sent."""


class ServerBusy(PyroinstError):
    """The server refused the connection: all its connections are in use, or the client's
    address holds as many as ``max_connections_per_host`` allows."""


class ClientBusy(PyroinstError):
    """Every connection a proxy may open (``max_connections``) stayed in calls of other
    threads for the whole of this call's time."""


class AuthenticationFailed(PyroinstError, Pyro5.errors.CommunicationError):
    """The lab's token did not match: the server refused this client (token missing or
    wrong), or the server could not prove that it knows the token (``reason`` attribute:
    ``"refused"`` or ``"unproven"``)."""


class DeviceReserved(PyroinstError):
    """Another client reserved the device. Attributes: ``owner``, ``until`` (epoch seconds)."""


class NameServerNotFound(PyroinstError):
    """No Pyro5 name server answered at the address that was tried."""


class NameInUse(PyroinstError):
    """A device name is already taken, by this server or by another live one."""


class DeviceDefinitionError(PyroinstError):
    """A device cannot be served as given (a reserved method name, an unknown job name...)."""


class DeviceClosed(PyroinstError):
    """The device was closed (its server is shutting down, or removed it): not run."""


class ChannelNotFound(PyroinstError, LookupError):
    """The device has no channel of that name (the message names those it has)."""


class MonitorError(PyroinstError):
    """A monitored method raised: the value of a channel item, carrying ``error_type`` and
    ``error_message`` of the driver's exception (it is handed to readers, not raised)."""


class DeviceBusy(PyroinstError):
    """The device stayed locked (by a job or another call) for longer than ``lock_timeout``."""


class NotSerializableError(PyroinstError, TypeError):
    """A value (a result or an argument) cannot be sent over the network."""


class SignatureError(PyroinstError, TypeError):
    """The arguments of a call do not fit the method's signature (the message shows it)."""


class MessageTooLarge(PyroinstError):
    """A response would exceed Pyro5's ``MAX_MESSAGE_SIZE``; it is not sent."""


class MessageRefused(PyroinstError, Pyro5.errors.ProtocolError):
    """A peer's message was refused without decoding it: the marshal serializer, a
    compressed or oversized handshake, a handshake answer in another serializer than the
    request's (see ``pyroinst.preproof``). The message says which and from where."""


class RemoteError(PyroinstError):
    """A driver raised an exception whose class the client cannot import.

    Attributes: ``remote_type`` (``module.Class``), ``remote_message`` and
    ``remote_traceback`` (the server-side traceback as text). Where the remote class
    derives from a built-in exception, the client-side object also derives from that
    built-in, so ``except ValueError`` still catches a driver's ``RangeError(ValueError)``.
    """

    remote_type: str = ""
    remote_message: str = ""
    remote_traceback: str = ""
    remote_builtin_base: str = ""
    remote_attributes: dict[str, Any] = {}  # noqa: RUF012 - read-only default


class JobError(PyroinstError):
    """Base class of the errors about jobs."""


class JobNotFound(JobError, LookupError):
    """No job of that id: it never existed here, it expired, or the server restarted."""


class JobCancelled(JobError):
    """The job was cancelled; raised by ``check_cancelled()`` and by ``result()``."""


class JobTimeout(JobError, builtins.TimeoutError):
    """The job did not finish within the timeout given to ``result()``."""


class DeviceError(PyroinstError):
    """Base class of the errors drivers raise about the instrument and its connection."""


class DeviceTimeout(DeviceError, builtins.TimeoutError):
    """No reply, or no complete reply, within the timeout.

    Attributes: ``command`` (what was sent last), ``partial`` (bytes received, if any),
    ``port``.
    """


class DeviceConnectionError(DeviceError, builtins.ConnectionError):
    """The port is missing, cannot be opened, or was lost. Attribute: ``port``."""


class ResponseError(DeviceError):
    """A reply that does not decode or does not parse. Attributes: ``raw`` (bytes), ``command``."""


class InstrumentError(DeviceError):
    """The instrument reported an error, e.g. from its SCPI error queue.

    ``InstrumentError(code, description)``; attributes ``code`` (int) and ``description``.
    """

    def __init__(self, code: int, description: str, **attrs: Any) -> None:
        super().__init__(f"instrument error {code}: {description}", **attrs)
        self.code = int(code)
        self.description = str(description)


class ConfigurationError(PyroinstError):
    """Settings that cannot be used (a lab file, an environment variable)."""


_ALL = [globals()[name] for name in __all__]

# Built-in exceptions a driver raises travel with their own type; of a driver's own class
# the most specific built-in base is kept so the client can still catch it by that base.
_BUILTIN_EXCEPTIONS = {
    name: t
    for name, t in vars(builtins).items()
    if isinstance(t, type) and issubclass(t, BaseException)
}


def builtin_base(exc_type: type[BaseException]) -> str:
    """Name of the first built-in class in ``exc_type``'s MRO (``"Exception"`` at least)."""
    for klass in exc_type.__mro__:
        if klass.__module__ == "builtins" and klass.__name__ in _BUILTIN_EXCEPTIONS:
            return klass.__name__
    return "Exception"


_remote_subclasses: dict[str, type[RemoteError]] = {}


def remote_error_class(base_name: str) -> type[RemoteError]:
    """The RemoteError class to raise for a remote exception deriving from ``base_name``."""
    base = _BUILTIN_EXCEPTIONS.get(base_name)
    if base is None or base in (Exception, BaseException) or not issubclass(base, Exception):
        return RemoteError
    klass = _remote_subclasses.get(base_name)
    if klass is None:
        try:
            # Named plainly so that, sent on again, it is still "pyroinst.errors.RemoteError".
            klass = type("RemoteError", (RemoteError, base), {})
        except TypeError:  # a built-in with an incompatible layout (e.g. OSError subclasses)
            klass = RemoteError
        klass.__module__ = __name__
        _remote_subclasses[base_name] = klass
    return klass


#: Modules (and their submodules) whose exceptions a client raises as themselves.
DEFAULT_EXCEPTION_MODULES = ("builtins", "numpy", "pyvisa", "qcodes", "pymeasure")
_allowed_modules: set[str] = set(DEFAULT_EXCEPTION_MODULES)


def allow_remote_exceptions(*modules: str) -> None:
    """Raise remote exceptions of classes from ``modules`` (and their submodules) as
    those classes, not as RemoteError: ``except pyvisa.errors.VisaIOError`` then catches
    them. A class is used only if its module is already imported here: a module is never
    imported because a server named it. Also ``PYROINST_REMOTE_EXCEPTIONS`` (commas)."""
    _allowed_modules.update(m.strip() for m in modules if m.strip())


def _allowed(module: str) -> bool:
    extra = os.environ.get("PYROINST_REMOTE_EXCEPTIONS", "")
    allowed = _allowed_modules | {m.strip() for m in extra.split(",") if m.strip()}
    return any(module == m or module.startswith(m + ".") for m in allowed)


def _as_remote_class(attributes: dict) -> BaseException | None:
    """The remote exception as its own class, if allowed and already imported here."""
    remote_type = str(attributes.get("remote_type", ""))
    module_name, _, qualname = remote_type.rpartition(".")
    if not module_name or not _allowed(module_name):
        return None
    module = sys.modules.get(module_name)
    if module is None:
        return None
    klass: Any = module
    for part in qualname.split("."):
        klass = getattr(klass, part, None)
    if not (isinstance(klass, type) and issubclass(klass, Exception)):
        return None
    try:
        exc = klass.__new__(klass)
        Exception.__init__(exc, str(attributes.get("remote_message", "")))
    except Exception:  # noqa: BLE001 - a class that cannot be made so: RemoteError then
        return None
    for key, value in dict(attributes.get("remote_attributes") or {}).items():
        with contextlib.suppress(Exception):
            setattr(exc, key, value)
    for key in ("remote_type", "remote_message", "remote_traceback"):
        with contextlib.suppress(Exception):
            setattr(exc, key, attributes.get(key, ""))
    return exc  # type: ignore[no-any-return]


def _rebuild(classname: str, data: dict) -> BaseException:
    """Pyro5 dict-to-class hook: rebuild a pyroinst exception with its own type."""
    name = classname.rsplit(".", 1)[-1]
    klass = globals()[name]
    attributes = dict(data.get("attributes") or {})
    if klass is RemoteError:
        own = _as_remote_class(attributes)
        if own is not None:
            with contextlib.suppress(Exception):
                own._pyroTraceback = attributes.get("_pyroTraceback")  # type: ignore[attr-defined]
            return own
        klass = remote_error_class(str(attributes.get("remote_builtin_base", "")))
    exc = klass.__new__(klass)
    Exception.__init__(exc, *data.get("args", ()))
    for key, value in attributes.items():
        setattr(exc, key, value)
    return exc


def register_with_pyro() -> None:
    """Teach every Pyro5 serializer to rebuild pyroinst exceptions as their own classes."""
    from Pyro5.serializers import SerializerBase

    for klass in _ALL:
        SerializerBase.register_dict_to_class(f"{__name__}.{klass.__name__}", _rebuild)

"""pyroinst: put a lab's instruments on the network with Pyro5.

Importing pyroinst installs its serializers into Pyro5 (numpy arrays, numpy scalars and
JobHandles at any depth, with every serializer), makes msgpack Pyro5's serializer unless
``PYRO_SERIALIZER`` is set, puts in the fast path for large arrays (``fastwire``),
teaches Pyro5 the pyroinst exception types, makes new proxies carry the lab's token
(``PYROINST_TOKEN``), turns TLS on when ``PYROINST_TLS_CA`` is set, and points
``PYRONAME:`` lookups at ``PYROINST_NS_HOST``/``PYROINST_NS_PORT`` when those are set.
"""

from __future__ import annotations

import os as _os

from Pyro5 import config as _pyro_config

from . import auth as _auth
from . import daemon as _daemon
from . import errors as _errors
from . import serialization as _serialization
from . import tls as _tls
from .channels import monitor, publish
from .client import (
    DeviceProxy,
    JobHandle,
    connect,
    default_timeout_set,
    disconnect,
    list_devices,
    locate_ns,
    set_default_timeout,
)
from .device import RESERVED_NAMES
from .errors import (
    AuthenticationFailed,
    CallTimeout,
    ChannelNotFound,
    ClientBusy,
    ConfigurationError,
    ConnectionLost,
    DeviceBusy,
    DeviceClosed,
    DeviceConnectionError,
    DeviceDefinitionError,
    DeviceError,
    DeviceNotFound,
    DeviceReserved,
    DeviceTimeout,
    DeviceUnreachable,
    InstrumentError,
    JobCancelled,
    JobError,
    JobNotFound,
    JobTimeout,
    MessageRefused,
    MessageTooLarge,
    MonitorError,
    NameInUse,
    NameServerNotFound,
    NotSerializableError,
    PyroinstError,
    RemoteError,
    ResponseError,
    ServerBusy,
    SignatureError,
)
from .jobs import Job, concurrent, current_job, job
from .nameserver import EmbeddedNameServer
from .receivepool import receive_pool
from .server import InstServer
from .streams import Stream
from .tls import configure_tls
from .tokens import current_token, set_token

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "InstServer",
    "EmbeddedNameServer",
    "receive_pool",
    "connect",
    "disconnect",
    "default_timeout_set",
    "set_default_timeout",
    "DeviceProxy",
    "list_devices",
    "locate_ns",
    "JobHandle",
    "Job",
    "job",
    "concurrent",
    "current_job",
    "monitor",
    "publish",
    "Stream",
    "ChannelNotFound",
    "MonitorError",
    "RESERVED_NAMES",
    "PyroinstError",
    "AuthenticationFailed",
    "DeviceReserved",
    "set_token",
    "configure_tls",
    "current_token",
    "ConfigurationError",
    "ConnectionLost",
    "DeviceUnreachable",
    "CallTimeout",
    "ServerBusy",
    "ClientBusy",
    "DeviceConnectionError",
    "DeviceError",
    "DeviceTimeout",
    "InstrumentError",
    "ResponseError",
    "DeviceBusy",
    "DeviceClosed",
    "DeviceDefinitionError",
    "DeviceNotFound",
    "JobCancelled",
    "JobError",
    "JobNotFound",
    "JobTimeout",
    "MessageTooLarge",
    "MessageRefused",
    "NameInUse",
    "NameServerNotFound",
    "NotSerializableError",
    "RemoteError",
    "SignatureError",
]

_serialization.install()
_auth.install()
_daemon.install()
_tls.configure_from_environment()
_errors.register_with_pyro()
if _os.environ.get("PYROINST_NS_HOST"):
    _pyro_config.NS_HOST = _os.environ["PYROINST_NS_HOST"]
if _os.environ.get("PYROINST_NS_PORT", "").isdigit():
    _pyro_config.NS_PORT = int(_os.environ["PYROINST_NS_PORT"])

"""Lab files: which devices a server holds and how it serves them (TOML).

::

    [server]
    host = "127.0.0.1"        # where the device daemon binds
    port = 0                  # 0: a free port
    advertise = "lab-pc-2"    # host name put into URIs, when it differs from host
    ns_host = "lab-ns"        # name server (else PYROINST_NS_HOST, else Pyro5 config)
    ns_port = 9090
    log_level = "INFO"
    lock_timeout = 10.0       # seconds a plain call waits for a busy device
    max_jobs = 1000           # retention of finished jobs: count,
    max_result_bytes = 1073741824   # total result bytes,
    max_job_age = 86400.0     # and age in seconds
    threadpool_size = 200     # concurrent client connections
    shutdown_timeout = 10.0   # seconds running jobs get to stop at shutdown
    heartbeat = 10.0          # seconds between checks that every name is registered
    token_file = "/etc/pyroinst/token"   # the lab's shared secret (else PYROINST_TOKEN)
    max_message_size = 1073741824        # the largest message accepted (bytes)
    stream_buffer_items = 10000          # items kept per job stream and per channel,
    stream_buffer_bytes = 268435456      # and bytes (the oldest go first)
    tls_ca = "/etc/pyroinst/ca.pem"      # TLS for every connection of this process
    tls_cert = "/etc/pyroinst/pc2.pem"
    tls_key = "/etc/pyroinst/pc2.key"
    tls_require_client_cert = false      # true: mutual TLS
    accept_plain_token = false           # true: plain Pyro5 scripts may send the token itself
    handshake_timeout = 5.0              # seconds a new connection gets to authenticate
    max_connections_per_host = 64        # connections one client address may hold
    max_pending_handshakes = 256         # connections in their handshake at once
    max_queued_jobs = 1000               # jobs one device may have waiting
    audit_log = "/var/log/pyroinst/audit.jsonl"   # one JSON line per remote action
    audit_reads = false                  # true: reads too (status, streams, describe ...)

    [devices.dev]
    class = "devices.dummy:DummyDevice"   # module:Class (or module.Class)
    args = []
    kwargs = { idn_delay = 0.5 }
    jobs = []                 # extra methods to run as jobs
    lock_timeout = 5.0        # overrides the server's
    stream_buffer_items = 1000           # override the server's, for this device
    stream_buffer_bytes = 67108864
    max_queued_jobs = 100                # overrides the server's, for this device
    expose = []               # offered even if hidden (names or glob patterns)
    hide = []                 # not offered, e.g. ["reset*"]
    attributes = []           # other attributes offered as properties, e.g. ["timeout"]
    profile = "auto"          # auto (by class), none, qcodes, pymeasure, pyvisa

Every error is a ``LabFileError`` naming the file and, where it can, the table and key
(or line, for TOML syntax), raised before any device is created or registered. Classes
are imported with the lab file's directory and the current directory on ``sys.path``.
"""

from __future__ import annotations

import importlib
import logging
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, PyroinstError
from .offering import PROFILES

__all__ = ["LabFileError", "DeviceStartError", "LabConfig", "DeviceSpec", "load_lab", "demo_lab"]

log = logging.getLogger(__name__)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# key -> (accepted types, description for messages)
_SERVER_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "host": ((str,), "a host name or address"),
    "port": ((int,), "a port number (0 for a free one)"),
    "advertise": ((str,), "a host name or address"),
    "ns_host": ((str,), "a host name or address"),
    "ns_port": ((int,), "a port number"),
    "log_level": ((str,), "one of " + ", ".join(_LOG_LEVELS)),
    "lock_timeout": ((int, float), "a number of seconds"),
    "max_jobs": ((int,), "a whole number"),
    "max_result_bytes": ((int,), "a whole number of bytes"),
    "max_job_age": ((int, float), "a number of seconds"),
    "threadpool_size": ((int,), "a whole number"),
    "shutdown_timeout": ((int, float), "a number of seconds"),
    "heartbeat": ((int, float), "a number of seconds (0: never)"),
    "token_file": ((str,), "the path of a file holding the lab's token"),
    "max_message_size": ((int,), "a whole number of bytes"),
    "stream_buffer_items": ((int,), "a whole number of items"),
    "stream_buffer_bytes": ((int,), "a whole number of bytes"),
    "tls_ca": ((str,), "the path of the lab CA's certificate"),
    "tls_cert": ((str,), "the path of this PC's certificate"),
    "tls_key": ((str,), "the path of this PC's private key"),
    "tls_require_client_cert": ((bool,), "true or false"),
    "accept_plain_token": ((bool,), "true or false"),
    "handshake_timeout": ((int, float), "a number of seconds"),
    "max_connections_per_host": ((int,), "a whole number of connections"),
    "max_pending_handshakes": ((int,), "a whole number of connections"),
    "max_queued_jobs": ((int,), "a whole number of jobs"),
    "audit_log": ((str,), "the path of the audit log file"),
    "audit_reads": ((bool,), "true or false"),
}
_DEVICE_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "class": ((str,), 'a "module:Class" string'),
    "args": ((list,), "a list"),
    "kwargs": ((dict,), "a table"),
    "jobs": ((list,), "a list of method names"),
    "lock_timeout": ((int, float), "a number of seconds"),
    "stream_buffer_items": ((int,), "a whole number of items"),
    "stream_buffer_bytes": ((int,), "a whole number of bytes"),
    "max_queued_jobs": ((int,), "a whole number of jobs"),
    "expose": ((list,), "a list of member names or patterns"),
    "hide": ((list,), "a list of member names or patterns"),
    "attributes": ((list,), "a list of attribute names"),
    "profile": ((str,), "auto, none, qcodes, pymeasure or pyvisa"),
}


class LabFileError(ConfigurationError):
    """A lab file that cannot be used: missing, bad TOML, unknown key, bad value, bad class."""


class DeviceStartError(PyroinstError):
    """A device's constructor raised while a lab file was being served."""


@dataclass
class DeviceSpec:
    """One ``[devices.NAME]`` table of a lab file."""

    name: str
    class_path: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)
    lock_timeout: float | None = None
    stream_buffer_items: int | None = None
    stream_buffer_bytes: int | None = None
    max_queued_jobs: int | None = None
    expose: list[str] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    profile: str | None = None
    cls: type | None = None

    def create(self) -> Any:
        """Instantiate the driver (DeviceStartError naming the device if its constructor raises)."""
        assert self.cls is not None, "import_classes() first"
        try:
            return self.cls(*self.args, **self.kwargs)
        except Exception as exc:
            raise DeviceStartError(
                f"device '{self.name}': {self.class_path}(...) raised {type(exc).__name__}: {exc}",
                device=self.name,
            ) from exc


@dataclass
class LabConfig:
    """A parsed lab file: InstServer keyword arguments, log level, device specs."""

    path: Path | None
    server: dict[str, Any]
    log_level: str | None
    devices: list[DeviceSpec]
    tls: dict[str, Any] = field(default_factory=dict)

    def configure_tls(self) -> None:
        """Turn TLS on for this process if the lab file asks for it."""
        if self.tls:
            from .tls import configure_tls

            configure_tls(
                self.tls["tls_ca"],
                self.tls.get("tls_cert"),
                self.tls.get("tls_key"),
                self.tls.get("tls_require_client_cert", False),
            )

    def import_classes(self) -> None:
        """Import every device class (LabFileError naming the module or class if one fails)."""
        extra = [str(self.path.parent.resolve())] if self.path else []
        for entry in [*extra, str(Path.cwd())]:
            if entry not in sys.path:
                sys.path.append(entry)
        for spec in self.devices:
            spec.cls = import_class(spec.class_path, f"{self._where()} [devices.{spec.name}]")

    def create_devices(self) -> dict[str, Any]:
        """Instantiate all devices in file order; if one raises, close the ones already made."""
        made: dict[str, Any] = {}
        try:
            for spec in self.devices:
                made[spec.name] = spec.create()
        except DeviceStartError:
            for name, device in made.items():
                close = getattr(device, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception:
                        log.exception("closing device '%s' after a failed start", name)
            raise
        return made

    def _where(self) -> str:
        return str(self.path) if self.path else "lab"


def import_class(path: str, where: str) -> type:
    """The class named ``module:Class`` or ``module.Class`` (LabFileError if it cannot be had)."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise LabFileError(f"{where}: class = {path!r} should look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the lab file's error
        raise LabFileError(
            f"{where}: cannot import module {module_name!r} for class {path!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise LabFileError(f"{where}: module {module_name!r} has no class {attr!r}")
    if not isinstance(obj, type):
        raise LabFileError(f"{where}: {path!r} is not a class")
    return obj


def _check_table(
    table: Any, keys: dict[str, tuple[tuple[type, ...], str]], where: str
) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise LabFileError(f"{where} must be a table")
    for key, value in table.items():
        if key not in keys:
            raise LabFileError(
                f"{where}: unknown key {key!r} (known keys: {', '.join(sorted(keys))})"
            )
        types, description = keys[key]
        # bool is an int to Python, but `port = true` is a mistake.
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise LabFileError(f"{where}: {key} = {value!r} should be {description}")
    return table


def parse_lab(data: dict[str, Any], path: Path | None = None) -> LabConfig:
    """Validate the content of a lab file (already parsed TOML)."""
    where = str(path) if path else "lab"
    for key in data:
        if key not in ("server", "devices"):
            raise LabFileError(
                f"{where}: unknown table or key {key!r} (expected [server], [devices.NAME])"
            )
    server = dict(_check_table(data.get("server", {}), _SERVER_KEYS, f"{where} [server]"))
    log_level = server.pop("log_level", None)
    tls = {key: server.pop(key) for key in list(server) if key.startswith("tls_")}
    if tls and "tls_ca" not in tls:
        raise LabFileError(f"{where} [server]: TLS settings need tls_ca")
    if log_level is not None and log_level.upper() not in _LOG_LEVELS:
        raise LabFileError(
            f"{where} [server]: log_level = {log_level!r} should be one of {', '.join(_LOG_LEVELS)}"
        )
    for key in ("port", "ns_port"):
        if key in server and not 0 <= server[key] <= 65535:
            raise LabFileError(f"{where} [server]: {key} = {server[key]} is not a port number")
    devices_table = data.get("devices", {})
    if not isinstance(devices_table, dict):
        raise LabFileError(f"{where}: devices must be tables [devices.NAME]")
    specs = []
    for name, table in devices_table.items():
        dwhere = f"{where} [devices.{name}]"
        table = _check_table(table, _DEVICE_KEYS, dwhere)
        if "class" not in table:
            raise LabFileError(f'{dwhere}: missing key class = "package.module:Class"')
        jobs = table.get("jobs", [])
        if not all(isinstance(j, str) for j in jobs):
            raise LabFileError(f"{dwhere}: jobs = {jobs!r} should be a list of method names")
        for key in ("expose", "hide", "attributes"):
            names = table.get(key, [])
            if not all(isinstance(n, str) and n for n in names):
                raise LabFileError(f"{dwhere}: {key} = {names!r} should be a list of names")
        profile = table.get("profile")
        if profile is not None and profile not in ("auto", "none", *PROFILES):
            raise LabFileError(
                f"{dwhere}: profile = {profile!r} is unknown: use auto, none or one of "
                f"{', '.join(sorted(PROFILES))}"
            )
        specs.append(
            DeviceSpec(
                name=name,
                class_path=table["class"],
                args=list(table.get("args", [])),
                kwargs=dict(table.get("kwargs", {})),
                jobs=jobs,
                lock_timeout=table.get("lock_timeout"),
                stream_buffer_items=table.get("stream_buffer_items"),
                stream_buffer_bytes=table.get("stream_buffer_bytes"),
                max_queued_jobs=table.get("max_queued_jobs"),
                expose=list(table.get("expose", [])),
                hide=list(table.get("hide", [])),
                attributes=list(table.get("attributes", [])),
                profile=profile,
            )
        )
    return LabConfig(path, server, log_level.upper() if log_level else None, specs, tls)


def load_lab(path: str | Path) -> LabConfig:
    """Read and validate a lab file (LabFileError for every problem, nothing created yet)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LabFileError(f"lab file {str(path)!r} not found") from None
    except OSError as exc:
        raise LabFileError(f"cannot read lab file {str(path)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise LabFileError(f"{path}: not UTF-8 text ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise LabFileError(f"{path}: invalid TOML: {exc}") from None
    return parse_lab(data, path)


def demo_lab() -> LabConfig:
    """The demo: two dummy devices, ``dev`` and ``dev2``."""
    return parse_lab(
        {
            "devices": {
                "dev": {"class": "devices.dummy:DummyDevice"},
                "dev2": {"class": "devices.dummy:DummyDevice"},
            }
        }
    )

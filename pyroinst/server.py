"""InstServer: serve already-initialised device drivers over Pyro5.

::

    server = InstServer(host="127.0.0.1")
    server.add_device(DummyDevice(), "dev")
    server.run()          # blocks; Ctrl-C / SIGTERM: names removed, devices closed

Finding the name server: the ``ns_host``/``ns_port`` arguments, else
``PYROINST_NS_HOST``/``PYROINST_NS_PORT``, else Pyro5's configuration and broadcast. If
none answers there, the server starts an embedded one at that address (with no address
given at all: Pyro5's ``NS_HOST``:``NS_PORT``, localhost:9090) and logs where.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

import Pyro5.client
import Pyro5.core
import Pyro5.errors
import Pyro5.server
from Pyro5 import config as pyro_config

from .admission import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_HOST
from .audit import AuditLog
from .auth import require_client_side
from .buffers import DEFAULT_BYTES, DEFAULT_ITEMS
from .daemon import DeviceDaemon, Guarding, secure
from .device import DeviceServant
from .errors import (
    ConfigurationError,
    DeviceDefinitionError,
    NameInUse,
    PyroinstError,
)
from .fastwire import WIRE_MAX
from .forwarders import make_servant
from .handshakes import DEFAULT_MAX_PENDING_HANDSHAKES
from .nameserver import EmbeddedNameServer
from .naming import ns_address
from .offering import Offer
from .registration import Registration, is_loopback
from .retention import JobStore
from .tokens import own_token, resolve_keys
from .workers import DEFAULT_MAX_QUEUED_JOBS

__all__ = ["InstServer"]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-:]+$")


def _stream_bounds(items: Any, nbytes: Any) -> tuple[int, int]:
    try:
        bounds = int(items), int(nbytes)
    except (TypeError, ValueError):
        bounds = (0, 0)
    if bounds[0] < 1 or bounds[1] < 1:
        raise ConfigurationError(
            f"stream_buffer_items={items!r} and stream_buffer_bytes={nbytes!r} must be whole "
            "numbers of at least 1 (defaults: 10000 items, 268435456 bytes)"
        )
    return bounds


def _queued_bound(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"max_queued_jobs={value!r} is not usable: give a whole number of at least 1 "
            f"(default {DEFAULT_MAX_QUEUED_JOBS})"
        )
    return value


class InstServer(Registration):
    """Serves device instances over Pyro5 and registers them with a name server.

    Arguments: ``host``/``port`` where the device daemon binds (port 0: a free one);
    ``ns_host``/``ns_port`` where the name server is (see the module docstring);
    ``advertise``: the host name or address put in the URIs clients use, when it differs
    from ``host`` (e.g. bind 0.0.0.0, advertise lab-pc-2); ``lock_timeout``: seconds a
    plain call waits for a busy device before DeviceBusy (per device in ``add_device``);
    ``max_jobs``, ``max_result_bytes``, ``max_job_age``: retention of finished jobs;
    ``threadpool_size``: concurrent client connections; ``shutdown_timeout``: seconds
    running jobs get to stop at shutdown; ``embed_ns``: start a name server if none answers;
    ``heartbeat``: seconds between checks that every name is still registered (0: never);
    ``token``/``token_file``: the lab's shared secret (default: PYROINST_TOKEN), required
    from every client and sent to the name server; ``max_message_size``: the largest
    message accepted, in bytes (default: Pyro5's 1 GiB; like ``threadpool_size`` it is
    per process); ``stream_buffer_items``/``stream_buffer_bytes``: what each job stream
    and each device channel keeps (the oldest items go first; per device in
    ``add_device``); ``accept_plain_token``: also take the token sent as plain text by
    plain Pyro5 scripts (weaker: see ``pyroinst.auth``); ``handshake_timeout``: seconds a
    new connection gets to complete its handshake; ``max_connections_per_host``:
    connections one client address may hold (see ``pyroinst.admission``);
    ``max_pending_handshakes``: connections that may be in their handshake at once (see
    ``pyroinst.handshakes``); ``max_queued_jobs``: jobs one device may have waiting (and
    running concurrently) before ``job_start`` raises DeviceBusy (per device in
    ``add_device``);
    ``audit_log``: a file that gets one JSON line per remote action that can change
    something, ``audit_reads`` adding the reads (see ``pyroinst.audit``).

    Readers of streams and channels hold a connection while they wait (up to the
    ``timeout`` of each read, 1 s by default): each reader takes one of the
    ``threadpool_size`` connections, as each client thread does.

    Binding ``0.0.0.0`` (every interface) without ``advertise`` advertises the address
    this PC uses to reach the name server. A URI on 127.0.0.1 is refused by a name server
    on another address: other PCs could not use it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ns_host: str | None = None,
        ns_port: int | None = None,
        *,
        advertise: str | None = None,
        lock_timeout: float = 10.0,
        max_jobs: int = 1000,
        max_result_bytes: int = 1 << 30,
        max_job_age: float = 24 * 3600.0,
        threadpool_size: int = 200,
        shutdown_timeout: float = 10.0,
        embed_ns: bool = True,
        heartbeat: float = 10.0,
        token: str | None = None,
        token_file: str | None = None,
        max_message_size: int | None = None,
        stream_buffer_items: int = DEFAULT_ITEMS,
        stream_buffer_bytes: int = DEFAULT_BYTES,
        accept_plain_token: bool = False,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_connections_per_host: int = DEFAULT_MAX_CONNECTIONS_PER_HOST,
        audit_log: str | os.PathLike[str] | None = None,
        audit_reads: bool = False,
        max_pending_handshakes: int = DEFAULT_MAX_PENDING_HANDSHAKES,
        max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS,
    ) -> None:
        self.host = host
        self.port = port
        self.advertise = advertise
        self.lock_timeout = lock_timeout
        self.threadpool_size = threadpool_size
        self.shutdown_timeout = shutdown_timeout
        self.embed_ns = embed_ns
        self.heartbeat = float(heartbeat)
        self.keys = resolve_keys(token, token_file)
        self.token = own_token(self.keys)
        require_client_side(self.token)
        self.guarding = Guarding(
            self.token,
            accept_plain_token,
            handshake_timeout,
            max_connections_per_host,
            max_pending_handshakes,
            self.keys,
        )
        self.max_queued_jobs = _queued_bound(max_queued_jobs)
        if max_message_size is not None and not 0 < int(max_message_size) <= WIRE_MAX:
            raise ConfigurationError(
                f"max_message_size={max_message_size} is not usable: a Pyro5 message holds "
                f"1 to {WIRE_MAX} bytes (less than 4 GiB); the default is 1 GiB",
            )
        self.max_message_size = max_message_size
        self.stream_bounds = _stream_bounds(stream_buffer_items, stream_buffer_bytes)
        # Opened now: a log that cannot be written stops the server before it serves.
        self.audit = None if audit_log is None else AuditLog(audit_log, reads=audit_reads)
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self._ns_down = False
        self._ns_location: tuple[str | None, int | None] = (None, None)
        self._warned_taken: set[str] = set()
        self.ns_host, self.ns_port = ns_address(ns_host, ns_port)
        self.store = JobStore(max_jobs, max_result_bytes, max_job_age)
        self.id = uuid.uuid4().hex[:12]
        self.embedded_ns: EmbeddedNameServer | None = None
        self._servants: dict[str, DeviceServant] = {}
        self._registered: dict[str, str] = {}
        self._daemon: Pyro5.server.Daemon | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._stop_requested = threading.Event()
        self._stopped = False

    # -- devices ----------------------------------------------------------------------------
    def add_device(
        self,
        device: Any,
        name: str,
        jobs: set[str] | list[str] | tuple[str, ...] | None = None,
        lock_timeout: float | None = None,
        stream_buffer_items: int | None = None,
        stream_buffer_bytes: int | None = None,
        max_queued_jobs: int | None = None,
        expose: list[str] | tuple[str, ...] | None = None,
        hide: list[str] | tuple[str, ...] | None = None,
        attributes: list[str] | tuple[str, ...] | None = None,
        profile: str | None = None,
    ) -> str | None:
        """Serve the driver instance ``device`` under ``name``.

        ``expose``, ``hide`` and ``attributes`` (names or glob patterns) choose what
        clients may reach, on top of the driver family's safe ``profile`` (``"auto"``,
        ``"none"``, ``"qcodes"``, ``"pymeasure"``, ``"pyvisa"``): see
        ``pyroinst.offering``.

        ``jobs`` names methods to run as jobs besides those marked ``@pyroinst.job``;
        ``lock_timeout``, ``stream_buffer_items``, ``stream_buffer_bytes`` and
        ``max_queued_jobs`` override the server's for this device. Returns the device's URI
        once the server runs (None before ``start()``). Raises NameInUse for a name
        already added here (or held by another live server), DeviceDefinitionError for a
        device that cannot be served (a reserved method name, an unknown job name).
        """
        if isinstance(device, type):
            raise DeviceDefinitionError(
                f"add_device() needs an instance, got the class {device.__name__}; "
                f"call it first, e.g. add_device({device.__name__}(), {name!r})"
            )
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise DeviceDefinitionError(
                f"device name {name!r} is not usable: use letters, digits and _ . - :"
            )
        with self._lock:
            self._refuse_if_stopped(f"add_device({name!r})")
            if name in self._servants:
                raise NameInUse(
                    f"a device named {name!r} is already served here "
                    f"({type(self._servants[name]._device).__name__}); choose another name",
                    device=name,
                )
            servant = make_servant(
                device,
                name,
                self.store,
                jobs,
                self.lock_timeout if lock_timeout is None else lock_timeout,
                _stream_bounds(
                    self.stream_bounds[0] if stream_buffer_items is None else stream_buffer_items,
                    self.stream_bounds[1] if stream_buffer_bytes is None else stream_buffer_bytes,
                ),
                _queued_bound(self.max_queued_jobs if max_queued_jobs is None else max_queued_jobs),
                Offer.of(expose, hide, attributes, profile),
            )
            servant._audit = self.audit
            self._servants[name] = servant
            if self._daemon is None:
                return None
            try:
                return self._publish(name, servant)
            except BaseException:
                del self._servants[name]
                raise

    def remove_device(self, name: str, close: bool = True) -> None:
        """Stop serving ``name``: name removed, its monitors stopped, jobs cancelled, and
        the device closed (unless ``close=False``: then it is the caller's again, and may be
        added again, here or to another server)."""
        with self._lock:
            servant = self._servants.pop(name)
            self._unpublish(name, servant)
        if close:
            servant._shutdown(self.shutdown_timeout)
        else:
            servant._retire(self.shutdown_timeout)

    @property
    def devices(self) -> dict[str, Any]:
        """The served driver instances by name."""
        return {name: s._device for name, s in self._servants.items()}

    def uri(self, name: str) -> str:
        """The URI of the device ``name`` (once the server runs)."""
        return self._servants[name]._uri

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._daemon is not None

    @property
    def location(self) -> str:
        """``host:port`` the device daemon listens on."""
        if self._daemon is None:
            return f"{self.host}:{self.port}"
        return self._daemon.locationStr

    @property
    def ns_location(self) -> str:
        """``host:port`` of the name server this server registers with (once started)."""
        host, port = self._ns_location
        if host is None:
            host, port = self.ns_host, self.ns_port
        return f"{host or pyro_config.NS_HOST}:{port or pyro_config.NS_PORT}"

    def start(self) -> InstServer:
        """Find (or embed) the name server, bind the daemon, publish every device. Returns self."""
        with self._lock:
            if self._daemon is not None:
                return self
            self._refuse_if_stopped("start()")
            self._ensure_ns()
            if self.max_message_size is not None:
                pyro_config.MAX_MESSAGE_SIZE = int(self.max_message_size)
            pyro_config.THREADPOOL_SIZE = max(int(self.threadpool_size), 1)
            pyro_config.THREADPOOL_SIZE_MIN = min(
                pyro_config.THREADPOOL_SIZE_MIN, pyro_config.THREADPOOL_SIZE
            )
            advertise = self.advertise
            if advertise is None and self.host in ("0.0.0.0", "::", ""):
                advertise = self._address_towards_ns()
                log.info("bound to all interfaces; advertising %s", advertise)
            try:
                self._daemon = DeviceDaemon(
                    host=self.host,
                    port=self.port,
                    nathost=advertise,
                    natport=0 if advertise else None,
                )
            except OSError as exc:
                self._stop_embedded_ns()
                raise PyroinstError(
                    f"cannot serve on {self.host}:{self.port}: {exc} (is another server "
                    "using that port? choose another port, or 0 for a free one)",
                    address=f"{self.host}:{self.port}",
                ) from None
            secure(self._daemon, self.guarding)
            if self.token is None and not is_loopback(self.host or "0.0.0.0"):
                log.warning(
                    "serving on %s without a token: anyone who can reach this PC can use its "
                    "devices. Set one with PYROINST_TOKEN, [server] token_file in the lab "
                    "file, or --token-file.",
                    self.host,
                )
            self._thread = threading.Thread(
                target=self._daemon.requestLoop, daemon=True, name="pyroinst-daemon"
            )
            self._thread.start()
            published = []
            try:
                for name, servant in self._servants.items():
                    self._publish(name, servant)
                    published.append(name)
            except BaseException:
                self.stop()
                raise
            if self.heartbeat > 0:
                self._heartbeat_stop.clear()
                self._heartbeat_thread = threading.Thread(
                    target=self._heartbeat_loop, daemon=True, name="pyroinst-heartbeat"
                )
                self._heartbeat_thread.start()
            log.info(
                "serving %d device(s) at %s: %s",
                len(published),
                self.location,
                ", ".join(published) or "none yet",
            )
            return self

    def _refuse_if_stopped(self, what: str) -> None:
        if self._stopped:
            raise PyroinstError(
                f"{what} on a stopped InstServer: stopping closed its devices, so it cannot "
                "serve again. Make a new InstServer (with freshly opened devices)."
            )

    def stop(self) -> None:
        """Remove the names, stop jobs, close every device, stop the daemon (idempotent).

        A stopped server cannot be started again: its devices are closed.
        """
        self._stopped = True
        self._heartbeat_stop.set()
        heartbeat = self._heartbeat_thread
        if heartbeat is not None and heartbeat is not threading.current_thread():
            heartbeat.join(5.0)  # before the lock: a heartbeat may be waiting for it
        with self._lock:
            self._heartbeat_thread = None
            if self._daemon is not None:
                for name, servant in list(self._servants.items()):
                    self._unpublish(name, servant)
            for servant in self._servants.values():
                servant._shutdown(self.shutdown_timeout)  # once per device
            if self._daemon is not None:
                self._daemon.shutdown()
                if self._thread is not None:
                    self._thread.join(5.0)
                self._daemon.close_connections()
                self._daemon.close()
                self._daemon = None
                log.info("server stopped")
            self._stop_embedded_ns()
            if self.audit is not None:
                self.audit.close()

    def run(self, on_started: Callable[[InstServer], None] | None = None) -> None:
        """Start, serve until SIGINT or SIGTERM (or ``request_stop()``), then stop cleanly.

        The signal handlers are in place before anything is registered, so a signal at
        any moment still removes the names and closes the devices. ``on_started(server)``
        runs once the devices are published.
        """
        self._stop_requested.clear()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda signum, frame: self.request_stop())
        try:
            self.start()
            if on_started is not None:
                on_started(self)
            while not self._stop_requested.wait(0.5):
                pass
            log.info("shutting down")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def request_stop(self) -> None:
        """Make ``run()`` return (safe from signal handlers and other threads)."""
        self._stop_requested.set()

    def __enter__(self) -> InstServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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

import contextlib
import ipaddress
import logging
import re
import signal
import socket
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import Pyro5.client
import Pyro5.core
import Pyro5.errors
import Pyro5.server
from Pyro5 import config as pyro_config

from .auth import TokenCheckingDaemon, resolve_token
from .buffers import DEFAULT_BYTES, DEFAULT_ITEMS
from .device import DeviceServant, make_servant
from .errors import (
    ConfigurationError,
    DeviceDefinitionError,
    NameInUse,
    NameServerNotFound,
    PyroinstError,
)
from .fastwire import WIRE_MAX, FastwireDaemon
from .nameserver import EmbeddedNameServer
from .naming import CLASS_TAG, DEVICE_TAG, HOST_TAG, SERVER_TAG, locate_ns, ns_address
from .retention import JobStore

__all__ = ["InstServer"]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-:]+$")
#: Seconds an old registration's owner gets to answer before it counts as dead.
LIVENESS_TIMEOUT = 2.0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


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


def is_live(uri: str, timeout: float = LIVENESS_TIMEOUT) -> bool:
    """True if a daemon answers at ``uri`` and still serves that object."""
    proxy = Pyro5.client.Proxy(uri)
    proxy._pyroTimeout = timeout
    try:
        proxy._pyroBind()
    except Pyro5.errors.PyroError as exc:
        text = str(exc)
        if "rejected" in text and "unknown object" not in text:
            return True  # a server answered and turned us down (another token): alive
        # refused, timed out, or another daemon on that port (no such object): stale
        return False
    finally:
        proxy._pyroRelease()
    return True


class _Daemon(FastwireDaemon, TokenCheckingDaemon, Pyro5.server.Daemon):
    """Pyro5's daemon, refusing connections without the lab's token (when one is set),
    keeping nothing of a request once it is answered, and closing its clients'
    connections when it stops (Pyro5 leaves them to the old daemon, which no longer
    knows any device: clients would get "unknown object" instead of reconnecting)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pyroinst_connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def _handshake(self, conn: Any, denied_reason: Any = None) -> Any:
        accepted = super()._handshake(conn, denied_reason)
        if accepted:
            self._pyroinst_connections.add(conn)
        return accepted

    def close_connections(self) -> None:
        """End every client connection: clients see it closed and connect afresh."""
        for conn in list(self._pyroinst_connections):
            with contextlib.suppress(OSError, AttributeError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the worker waiting on it


class InstServer:
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
    ``add_device``).

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
    ) -> None:
        self.host = host
        self.port = port
        self.advertise = advertise
        self.lock_timeout = lock_timeout
        self.threadpool_size = threadpool_size
        self.shutdown_timeout = shutdown_timeout
        self.embed_ns = embed_ns
        self.heartbeat = float(heartbeat)
        self.token = resolve_token(token, token_file)
        if max_message_size is not None and not 0 < int(max_message_size) <= WIRE_MAX:
            raise ConfigurationError(
                f"max_message_size={max_message_size} is not usable: a Pyro5 message holds "
                f"1 to {WIRE_MAX} bytes (less than 4 GiB); the default is 1 GiB",
            )
        self.max_message_size = max_message_size
        self.stream_bounds = _stream_bounds(stream_buffer_items, stream_buffer_bytes)
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
    ) -> str | None:
        """Serve the driver instance ``device`` under ``name``.

        ``jobs`` names methods to run as jobs besides those marked ``@pyroinst.job``;
        ``lock_timeout``, ``stream_buffer_items`` and ``stream_buffer_bytes`` override
        the server's for this device. Returns the device's URI
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
            )
            self._servants[name] = servant
            if self._daemon is None:
                return None
            try:
                return self._publish(name, servant)
            except BaseException:
                del self._servants[name]
                raise

    def remove_device(self, name: str, close: bool = True) -> None:
        """Stop serving ``name``: name removed, jobs cancelled, device closed (by default)."""
        with self._lock:
            servant = self._servants.pop(name)
            self._unpublish(name, servant)
        if close:
            servant._shutdown(self.shutdown_timeout)

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
                self._daemon = _Daemon(
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
            self._daemon._pyroinst_token = self.token
            if self.token is None and not _is_loopback(self.host or "0.0.0.0"):
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

    # -- name server ---------------------------------------------------------------------------
    def _ensure_ns(self) -> None:
        try:
            with locate_ns(self.ns_host, self.ns_port, token=self.token) as ns:
                self._ns_location = (ns._pyroUri.host, ns._pyroUri.port)
                return
        except NameServerNotFound:
            if not self.embed_ns:
                raise
        host = self.ns_host or pyro_config.NS_HOST
        port = pyro_config.NS_PORT if self.ns_port is None else self.ns_port
        try:
            self.embedded_ns = EmbeddedNameServer(host, port, token=self.token).start()
        except OSError as exc:
            raise NameServerNotFound(
                f"no name server answered at {host}:{port}, and one cannot be started there: {exc}"
            ) from None
        # Later lookups must go to the embedded name server, also when port 0 chose one.
        self.ns_host, self.ns_port = self.embedded_ns.host, self.embedded_ns.port
        self._ns_location = (self.ns_host, self.ns_port)
        # Expected on a first start (the demo, a one-PC lab): not a problem, so INFO.
        log.info(
            "no name server found; started an embedded one at %s:%d", self.ns_host, self.ns_port
        )

    def _stop_embedded_ns(self) -> None:
        if self.embedded_ns is not None:
            self.embedded_ns.stop()
            self.embedded_ns = None

    def _metadata(self, servant: DeviceServant) -> set[str]:
        cls = type(servant._device)
        return {
            DEVICE_TAG,
            f"{CLASS_TAG}{cls.__module__}.{cls.__qualname__}",
            f"{HOST_TAG}{socket.gethostname()}",
            f"{SERVER_TAG}{self.id}",
        }

    def _address_towards_ns(self) -> str:
        """The local address this PC uses to reach the name server (else its host name)."""
        host, port = self._ns_location
        if host and not _is_loopback(host):
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.connect((host, port or 9090))  # no packet is sent
                    return probe.getsockname()[0]
            except OSError:
                pass
        return socket.gethostname()

    def _check_reachable(self, name: str, uri: str) -> None:
        ns_host = self._ns_location[0]
        uri_host = Pyro5.core.URI(uri).host
        if ns_host and _is_loopback(uri_host) and not _is_loopback(ns_host):
            raise ConfigurationError(
                f"device {name!r} would be registered as {uri} in the name server at "
                f"{ns_host}, but {uri_host} is this PC's loopback address: other PCs cannot "
                'reach it. Serve on the lab network: host = "0.0.0.0" (or this PC\'s '
                'address) and advertise = "<this PC\'s name or address>" ([server] in the '
                "lab file, or --host/--advertise).",
                device=name,
            )

    def _publish(self, name: str, servant: DeviceServant) -> str:
        assert self._daemon is not None
        uri = str(self._daemon.register(servant, objectId=name))
        servant._uri = uri
        try:
            self._check_reachable(name, uri)
        except ConfigurationError:
            self._daemon.unregister(name)
            raise
        try:
            with locate_ns(self.ns_host, self.ns_port, token=self.token) as ns:
                try:
                    existing = ns.lookup(name)
                except Pyro5.errors.NamingError:
                    existing = None
                if existing is not None and str(existing) != uri:
                    if is_live(str(existing)):
                        raise NameInUse(
                            f"the name {name!r} is held by a live server at {existing}; stop "
                            "that server, or serve this device under another name",
                            device=name,
                            uri=str(existing),
                        )
                    log.warning(
                        "replacing stale registration of %r (%s, not answering)", name, existing
                    )
                ns.register(name, uri, safe=False, metadata=self._metadata(servant))
        except BaseException:
            self._daemon.unregister(name)
            raise
        self._registered[name] = uri
        servant._start()
        log.info("registered %r at %s", name, uri)
        return uri

    def _heartbeat_loop(self) -> None:
        while not self._heartbeat_stop.wait(self.heartbeat):
            try:
                self.check_registrations()
            except Exception:  # noqa: BLE001 - the heartbeat must outlive any one failure
                log.exception("checking the registrations failed")

    def check_registrations(self) -> None:
        """Register again every name the name server lost (the heartbeat does this).

        A name now held by another live server is logged, not taken back; one held by a
        dead server is taken back.
        """
        with self._lock:
            entries = [(n, u, self._servants[n]) for n, u in self._registered.items()]
        if not entries:
            return
        try:
            ns_cm = locate_ns(
                self.ns_host, self.ns_port, timeout=LIVENESS_TIMEOUT, token=self.token
            )
        except NameServerNotFound as exc:
            if not self._ns_down:
                log.warning(
                    "name server unreachable (%s); will register again when it is back", exc
                )
                self._ns_down = True
            return
        with ns_cm as ns:
            if self._ns_down:
                log.info("name server reachable again")
                self._ns_down = False
            # One call for all of this server's names; only the missing ones are asked
            # about one by one (a thousand devices, a heartbeat: one round trip, not 1000).
            ours = ns.yplookup(meta_all={f"{SERVER_TAG}{self.id}"}, return_metadata=False)
            for name, uri, servant in entries:
                if str(ours.get(name)) == uri:
                    self._warned_taken.discard(name)
                    continue
                try:
                    current = str(ns.lookup(name))
                except Pyro5.errors.NamingError:
                    current = None
                if current == uri:
                    self._warned_taken.discard(name)
                    continue
                if not self._still_registered(name, uri):
                    continue  # removed meanwhile
                if current is not None and is_live(current):
                    if name not in self._warned_taken:
                        log.warning(
                            "the name %r is now held by another live server at %s; "
                            "not taking it back",
                            name,
                            current,
                        )
                        self._warned_taken.add(name)
                    continue
                with self._lock:
                    # Removal wins: register only while the name is still ours to serve
                    # (remove_device holds this lock while it unregisters).
                    if not self._still_registered(name, uri):
                        continue
                    ns.register(name, uri, safe=False, metadata=self._metadata(servant))
                self._warned_taken.discard(name)
                log.info(
                    "registered %r again at %s (the name server had %s)",
                    name,
                    uri,
                    "lost it" if current is None else f"a dead entry {current}",
                )

    def _still_registered(self, name: str, uri: str) -> bool:
        return self._registered.get(name) == uri and not self._stopped

    def _unpublish(self, name: str, servant: DeviceServant) -> None:
        uri = self._registered.pop(name, None)
        if uri is not None:
            try:
                with locate_ns(self.ns_host, self.ns_port, token=self.token) as ns:
                    # Only our own entry: the name may meanwhile belong to another server.
                    try:
                        current = str(ns.lookup(name))
                    except Pyro5.errors.NamingError:
                        current = None
                    if current == uri:
                        ns.remove(name)
            except (PyroinstError, Pyro5.errors.PyroError) as exc:
                log.warning("could not remove %r from the name server: %s", name, exc)
        if self._daemon is not None:
            try:
                self._daemon.unregister(name)
            except Pyro5.errors.DaemonError:
                pass

"""Client side: find the name server, connect to devices, follow jobs through handles.

Where the name server is, for every helper here: the explicit ``ns_host``/``ns_port``
arguments, else the ``PYROINST_NS_HOST``/``PYROINST_NS_PORT`` environment variables, else
Pyro5's own configuration (``Pyro5.config.NS_HOST``/``NS_PORT``, i.e. ``PYRO_NS_HOST``...)
and its broadcast lookup.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from typing import Any

import Pyro5.client
import Pyro5.core
import Pyro5.errors
from Pyro5 import config as pyro_config
from Pyro5.callcontext import current_context

from . import fastwire
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectionLost,
    DeviceNotFound,
    DeviceUnreachable,
    JobTimeout,
    NameServerNotFound,
    ServerBusy,
)

__all__ = [
    "JobHandle",
    "DeviceProxy",
    "connect",
    "list_devices",
    "locate_ns",
    "ns_address",
    "DEVICE_TAG",
    "RECONNECT_TIMEOUT",
]

log = logging.getLogger(__name__)

DEVICE_TAG = "pyroinst.device"
CLASS_TAG = "pyroinst.class:"
HOST_TAG = "pyroinst.host:"

#: Seconds a name-server connection may take before it counts as unreachable.
NS_TIMEOUT = 5.0
#: Longest single ``job_wait`` call a handle makes; longer waits are made of several.
_WAIT_SLICE = 10.0
#: Request annotation naming the calling client, for reservations (see device.py).
OWNER_ANNOTATION = "PIOW"
#: Seconds a DeviceProxy keeps trying to reach its device (re-resolving its name).
RECONNECT_TIMEOUT = 10.0


def ns_address(
    ns_host: str | None = None, ns_port: int | None = None
) -> tuple[str | None, int | None]:
    """The name server address to use: arguments, else PYROINST_NS_HOST/PORT, else (None, None).

    ``None`` means "whatever Pyro5's configuration and broadcast find".
    """
    host = ns_host or os.environ.get("PYROINST_NS_HOST") or None
    port = ns_port
    if port is None:
        env = os.environ.get("PYROINST_NS_PORT")
        if env:
            try:
                port = int(env)
            except ValueError:
                raise ConfigurationError(f"PYROINST_NS_PORT={env!r} is not a port number") from None
    return host, port


def describe_ns_address(host: str | None, port: int | None) -> str:
    """Human-readable form of an address as ``ns_address`` returns it."""
    if host is None:
        return f"{pyro_config.NS_HOST}:{port or pyro_config.NS_PORT} (Pyro5 config) or by broadcast"
    return f"{host}:{port or pyro_config.NS_PORT}"


def locate_ns(
    ns_host: str | None = None,
    ns_port: int | None = None,
    timeout: float = NS_TIMEOUT,
    token: str | None = None,
) -> Pyro5.client.Proxy:
    """A bound name-server proxy; NameServerNotFound (saying how to start one) if none answers.

    ``token``: the lab's token to present (default: this process's, see pyroinst.auth).
    """
    host, port = ns_address(ns_host, ns_port)
    try:
        if host is None:
            ns = Pyro5.core.locate_ns(port=port)
        else:
            ns = Pyro5.client.Proxy(
                f"PYRO:{Pyro5.core.NAMESERVER_NAME}@{host}:{port or pyro_config.NS_PORT}"
            )
        if token is not None:
            ns._pyroHandshake = token
        ns._pyroTimeout = timeout
        ns._pyroBind()
    except (Pyro5.errors.CommunicationError, Pyro5.errors.NamingError) as exc:
        where = describe_ns_address(host, port)
        if "authentication failed" in str(exc):
            raise AuthenticationFailed(
                f"the name server at {where} refused the connection: authentication failed "
                "(set the lab's token: PYROINST_TOKEN or --token-file)",
                address=where,
            ) from None
        raise NameServerNotFound(
            f"no name server answered at {where}: {exc}. Start one with `pyroinst ns` "
            "(or ./nameserver.sh, or a server that embeds one), or point to it with "
            "--ns-host/--ns-port or PYROINST_NS_HOST/PYROINST_NS_PORT.",
            address=where,
        ) from None
    return ns


def _ns_location(ns: Pyro5.client.Proxy) -> str:
    uri = ns._pyroUri
    return f"{uri.host}:{uri.port}"


def lookup(name: str, ns_host: str | None = None, ns_port: int | None = None) -> str:
    """The URI of the device ``name`` (DeviceNotFound naming the name server and what it has)."""
    with locate_ns(ns_host, ns_port) as ns:
        try:
            return str(ns.lookup(name))
        except Pyro5.errors.NamingError:
            known = sorted(ns.yplookup(meta_all={DEVICE_TAG}, return_metadata=False))
            raise DeviceNotFound(
                f"no device {name!r} in the name server at {_ns_location(ns)}; "
                f"devices there: {', '.join(known) if known else 'none'}",
                device=name,
            ) from None


def connect(
    name: str,
    ns_host: str | None = None,
    ns_port: int | None = None,
    timeout: float | None = None,
    reconnect_timeout: float = RECONNECT_TIMEOUT,
    owner: str | None = None,
) -> DeviceProxy:
    """A proxy of the device ``name``, looked up in the name server.

    ``owner`` names this client for reservations (``reserve(owner, ...)`` sets it too).

    The proxy uses the serializer pyroinst configured (msgpack, unless PYRO_SERIALIZER
    says otherwise) and ``timeout`` seconds per call (None: wait as long as the device
    takes). It survives a restart of the device's server: see DeviceProxy.
    DeviceNotFound names the device, the name server and the devices it knows.
    """
    proxy = DeviceProxy(
        lookup(name, ns_host, ns_port), name, ns_host, ns_port, reconnect_timeout, owner
    )
    proxy._pyroTimeout = timeout
    return proxy


def _socket_closed(sock: Any) -> bool:
    """True if the peer has closed this idle connection (no data may be pending on it)."""
    if hasattr(sock, "getpeercert"):
        return False  # TLS: a peek would need a record; let the call find out
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class DeviceProxy(Pyro5.client.Proxy):
    """A Pyro5 proxy that finds its device again when the device's server restarts.

    Before a call, if the proxy has no connection, or its idle connection was closed by
    the server, it connects again; when the old address does not answer it looks the
    device's name up in the name server again (the server may have come back on another
    port or host), retrying for up to ``reconnect_timeout`` seconds before it raises
    DeviceUnreachable. Only this connecting is retried: a call whose connection breaks
    after the request was sent may or may not have run on the device, so it is never
    re-sent; it raises ConnectionLost, and the next call connects afresh.
    """

    def __init__(
        self,
        uri: Any,
        name: str | None = None,
        ns_host: str | None = None,
        ns_port: int | None = None,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        owner: str | None = None,
    ) -> None:
        super().__init__(uri)
        self._pyroinst_name = name
        self._pyroinst_ns = (ns_host, ns_port)
        self._pyroinst_reconnect = float(reconnect_timeout)
        # Who this client is, for reservations; set by reserve() or given by the caller.
        self._pyroinst_owner = owner
        self._pyroinst_peer_max: int | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_pyroinst_"):
            object.__setattr__(self, name, value)  # ours, not a remote attribute
        else:
            super().__setattr__(name, value)

    def _pyroValidateHandshake(self, response: Any) -> None:  # noqa: N802 - Pyro5's name
        # A pyroinst server says how large a message it accepts.
        if isinstance(response, dict) and "max_message_size" in response:
            self._pyroinst_peer_max = int(response["max_message_size"])

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and not self._pyroMethods and not self._pyroAttrs:
            self._pyroinst_connect()  # the first call connects here, with the retries
        return super().__getattr__(name)

    def _pyroinst_connect(self) -> None:
        conn = self._pyroConnection
        if conn is not None:
            if not _socket_closed(conn.sock):
                return
            log.info("connection to %s was closed by the server; reconnecting", self._pyroUri)
            self._pyroRelease()
        deadline = time.monotonic() + self._pyroinst_reconnect
        delay = 0.05
        while True:
            try:
                self._pyroBind()
                return
            except Pyro5.errors.CommunicationError as exc:
                if "authentication failed" in str(exc):
                    raise AuthenticationFailed(
                        f"{self._pyroinst_label()} refused the connection: authentication "
                        "failed (set the lab's token: PYROINST_TOKEN or --token-file)",
                        device=self._pyroinst_name,
                    ) from None
                if "no free workers" in str(exc):
                    raise ServerBusy(
                        f"the server of {self._pyroinst_label()} has no free connection "
                        f"(all threadpool_size connections are in use): {exc}. Raise the "
                        "server's threadpool_size ([server] in the lab file) or close "
                        "idle clients.",
                    ) from None
                error = exc
            if self._pyroinst_name is not None:
                try:
                    uri = lookup(self._pyroinst_name, *self._pyroinst_ns)
                    if uri != str(self._pyroUri):
                        log.info("device %r moved to %s", self._pyroinst_name, uri)
                        self._pyroUri = Pyro5.core.URI(uri)
                except (DeviceNotFound, NameServerNotFound) as exc:
                    error = exc
            if time.monotonic() >= deadline:
                raise DeviceUnreachable(
                    f"{self._pyroinst_label()} did not answer for "
                    f"{self._pyroinst_reconnect:g} s ({str(error).rstrip('.')}). Is its "
                    "server running? "
                    "(`pyroinst list` shows which devices answer)",
                    device=self._pyroinst_name,
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _pyroinst_label(self) -> str:
        if self._pyroinst_name:
            return f"device {self._pyroinst_name!r} ({self._pyroUri})"
        return str(self._pyroUri)

    def _pyroInvoke(self, methodname, vargs, kwargs, flags=0, objectId=None):  # noqa: N802, N803
        if objectId is None:  # not a call to the daemon itself (metadata)
            self._pyroinst_connect()
        owner = self._pyroinst_owner
        if methodname == "reserve" and objectId is None:
            owner = str(vargs[0] if vargs else (kwargs or {}).get("owner", owner))
        annotations = current_context.annotations
        if owner:
            annotations[OWNER_ANNOTATION] = owner.encode("utf-8")
        fastwire.expect_peer_limit(self._pyroinst_peer_max, self._pyroinst_label())
        try:
            result = super()._pyroInvoke(methodname, vargs, kwargs, flags, objectId)
        except Pyro5.errors.ConnectionClosedError as exc:
            raise ConnectionLost(
                f"the connection to {self._pyroinst_label()} broke during {methodname}(): "
                f"{exc}. The call may or may not have run on the device; it was not "
                "re-sent. The next call reconnects.",
                device=self._pyroinst_name,
            ) from None
        finally:
            fastwire.expect_peer_limit(None, "")
            if owner:
                annotations.pop(OWNER_ANNOTATION, None)
        if methodname == "reserve" and objectId is None:
            self._pyroinst_owner = owner  # later calls present it
        return result


def list_devices(ns_host: str | None = None, ns_port: int | None = None) -> list[dict[str, Any]]:
    """Every pyroinst device the name server knows, whichever host serves it.

    Each entry: ``name``, ``uri``, ``class``, ``host`` (the URI's host, i.e. how clients
    reach it), ``port``, ``server_host`` (the serving PC's hostname), sorted by name.
    """
    with locate_ns(ns_host, ns_port) as ns:
        found = ns.yplookup(meta_all={DEVICE_TAG}, return_metadata=True)
    devices = []
    for name, (uri, metadata) in sorted(found.items()):
        parsed = Pyro5.core.URI(uri)
        meta = set(metadata)
        devices.append(
            {
                "name": name,
                "uri": str(uri),
                "class": _tag(meta, CLASS_TAG),
                "host": parsed.host,
                "port": parsed.port,
                "server_host": _tag(meta, HOST_TAG),
            }
        )
    return devices


def _tag(meta: set[str], prefix: str) -> str | None:
    for item in meta:
        if item.startswith(prefix):
            return item[len(prefix) :]
    return None


# Pyro5 proxies belong to one thread; handles share one proxy per thread and device, so
# a thousand handles hold one connection, not a thousand.
_local = threading.local()


def cached_proxy(
    uri: str, name: str | None = None, ns: tuple[str | None, int | None] = (None, None)
) -> DeviceProxy:
    """The calling thread's proxy for ``uri`` (created on first use, then reused).

    With ``name``, the proxy finds the device again through the name server (found as
    ``ns_address()`` says) if its server restarts.
    """
    cache: dict[str, Pyro5.client.Proxy] | None = getattr(_local, "proxies", None)
    if cache is None:
        cache = _local.proxies = {}
    proxy = cache.get(uri)
    if proxy is None:
        proxy = cache[uri] = DeviceProxy(uri, name, *ns)
    return proxy


def release_cached_proxies() -> None:
    """Close the calling thread's cached handle connections (they reconnect when used)."""
    cache = getattr(_local, "proxies", None) or {}
    for proxy in cache.values():
        proxy._pyroRelease()
    cache.clear()


class JobHandle:
    """A job running on a device: ask its status, wait for it, get its result, cancel it.

    Device methods marked as jobs return one at once. It is a small value (id, device
    name, device URI) that can be stored, passed around or rebuilt from its id; any
    number of handles share one connection per thread.
    """

    __slots__ = ("id", "device", "uri", "ns", "owner")

    def __init__(
        self,
        id: str,  # noqa: A002 - the contract's name
        device: str,
        uri: str,
        ns: tuple[str | None, int | None] | None = None,
        owner: str | None = None,
    ) -> None:
        self.id = str(id)
        self.device = str(device)
        self.uri = str(uri)
        # Not sent on the wire: where to look the device up again if its server moves,
        # and the reservation owner of the proxy that started the job.
        self.ns = ns or (None, None)
        self.owner = owner

    def _proxy(self) -> DeviceProxy:
        proxy = cached_proxy(self.uri, self.device, self.ns)
        proxy._pyroinst_owner = self.owner
        return proxy

    def status(self) -> dict[str, Any]:
        """The job's status dict: id, method, state, progress, message, times, error."""
        return self._proxy().job_status(self.id)

    def done(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.status()["state"] in ("done", "failed", "cancelled")

    def progress(self) -> float:
        """Progress 0..1; exactly 1.0 once the job is done."""
        return float(self.status()["progress"])

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job finishes or ``timeout`` seconds pass; True if it finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if self._proxy().job_wait(self.id, max(0.0, min(_WAIT_SLICE, remaining))):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def result(self, timeout: float | None = None) -> Any:
        """The job's return value (waiting up to ``timeout``); re-raises the job's error.

        Raises JobTimeout if it has not finished in time, JobCancelled if it was
        cancelled. The result stays on the server: it can be read again.
        """
        # The server waits (in slices, so no call blocks a connection for long): one round
        # trip for a job that finishes within a slice.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
            try:
                return self._proxy().job_result(self.id, max(0.0, min(_WAIT_SLICE, remaining)))
            except JobTimeout as exc:
                if getattr(exc, "job_id", None) != self.id:
                    raise  # the job's own error, not the wait running out
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeout(
                        f"job {self.id} on device '{self.device}' has not finished after "
                        f"{timeout:g} s",
                        job_id=self.id,
                    ) from None

    def cancel(self) -> bool:
        """Cancel the job; False if it had already finished."""
        return self._proxy().job_cancel(self.id)

    def to_wire(self) -> dict[str, str]:
        """The handle as sent over the network (a plain dict)."""
        return {"__pyroinst__": "JobHandle", "id": self.id, "device": self.device, "uri": self.uri}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and (self.id, self.uri) == (other.id, other.uri)

    def __hash__(self) -> int:
        return hash((self.id, self.uri))

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r}, device={self.device!r}, uri={self.uri!r})"

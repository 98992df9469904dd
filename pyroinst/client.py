"""Client side: connect to devices, list them, and the per-thread proxies handles use.

The name server is found as ``pyroinst.naming`` says (arguments, else
``PYROINST_NS_HOST``/``PYROINST_NS_PORT``, else Pyro5's configuration and broadcast).

Every wait is bounded. A proxy from ``connect()`` waits at most ``timeout`` seconds for a
reply (default ``PYROINST_TIMEOUT``, else ``CALL_TIMEOUT``, 30 s) and connecting takes at
most ``CONNECT_TIMEOUT`` (5 s) an attempt, within the same budget. When a call gets no
reply in time the proxy asks the server once more with a short ping: a server that still
answers means the call is just slow (``CallTimeout``); one that does not is a frozen or
gone PC (``DeviceUnreachable``, naming its address). Job handles and streams wait in
slices on the server and bound each slice the same way. A plain
``Pyro5.api.Proxy("PYRONAME:dev")`` keeps Pyro5's default (no timeout); give it one with
``proxy._pyroTimeout = 30``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import Pyro5.client
import Pyro5.core

from .handles import OWNER_ANNOTATION, JobHandle, use_client
from .liveness import DEFAULT_TIMEOUT, MIN_CHECK, check_servers, server_key
from .naming import (
    CLASS_TAG,
    DEVICE_TAG,
    HOST_TAG,
    SERVER_TAG,
    describe_ns_address,
    locate_ns,
    lookup,
    ns_address,
)
from .perthread import MAX_CONNECTIONS
from .proxy import DeviceProxy
from .timeouts import (
    CALL_TIMEOUT,
    CONNECT_TIMEOUT,
    RECONNECT_TIMEOUT,
    default_timeout,
    default_timeout_set,
    set_default_timeout,
    timeout_arg,
)

__all__ = [
    "JobHandle",
    "DeviceProxy",
    "connect",
    "disconnect",
    "list_devices",
    "locate_ns",
    "ns_address",
    "describe_ns_address",
    "lookup",
    "cached_proxy",
    "release_cached_proxies",
    "default_timeout",
    "default_timeout_set",
    "set_default_timeout",
    "DEVICE_TAG",
    "CLASS_TAG",
    "HOST_TAG",
    "OWNER_ANNOTATION",
    "RECONNECT_TIMEOUT",
    "CALL_TIMEOUT",
    "CONNECT_TIMEOUT",
]


def connect(
    name: str,
    ns_host: str | None = None,
    ns_port: int | None = None,
    timeout: float | None = None,
    reconnect_timeout: float = RECONNECT_TIMEOUT,
    owner: str | None = None,
    max_connections: int = MAX_CONNECTIONS,
    per_thread: bool = True,
) -> DeviceProxy:
    """A proxy of the device ``name``, looked up in the name server.

    ``owner`` names this client for reservations (``reserve(owner, ...)`` sets it too).

    The proxy belongs to no thread: any thread (a Qt or ophyd worker, a thread pool,
    ``asyncio.to_thread``) may call it at any time, each over a connection of its own,
    made on its first call and closed when that thread ends or by ``disconnect(proxy)``
    (also at the end of a ``with`` block); at most ``max_connections`` at once (a thread
    then takes over the connection idle longest). ``per_thread=False``: one connection
    for all threads, which the caller must then use one at a time.

    The proxy uses the serializer pyroinst configured (msgpack, unless PYRO_SERIALIZER
    says otherwise) and waits at most ``timeout`` seconds for a call's reply (None: the
    default, ``PYROINST_TIMEOUT`` else 30 s; ``math.inf``: as long as the device takes);
    run long measurements as jobs. It survives a restart of the device's server: see
    DeviceProxy. DeviceNotFound names the device, the name server and the devices it knows.
    """
    seconds = timeout_arg(timeout)
    proxy = DeviceProxy(
        lookup(name, ns_host, ns_port),
        name,
        ns_host,
        ns_port,
        reconnect_timeout,
        owner,
        per_thread=per_thread,
        max_connections=max_connections,
    )
    proxy._pyroTimeout = seconds
    return proxy


def disconnect(proxy: Any) -> None:
    """Close every connection of ``proxy`` (a ``connect()`` proxy: those of all threads;
    a plain Pyro5 proxy: its one). It stays usable: the next call connects again."""
    release_all = getattr(proxy, "_pyroinst_release_all", None)
    if release_all is not None:
        release_all()
    else:
        proxy._pyroRelease()


def list_devices(
    ns_host: str | None = None,
    ns_port: int | None = None,
    alive: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None,
) -> list[dict[str, Any]]:
    """Every pyroinst device the name server knows, whichever host serves it.

    Each entry: ``name``, ``uri``, ``class``, ``host`` (the URI's host, i.e. how clients
    reach it), ``port``, ``server_host`` (the serving PC's hostname), ``server`` (its
    server's id), sorted by name. With ``alive``, also ``alive`` (True, False, or None
    when the check did not get to it) and ``reason`` ("ok", "connection refused", "no
    answer within 1.5 s", "authentication failed", ...): each server is asked once, all
    at once, and the whole check takes at most ``timeout`` seconds. ``deadline`` (a
    ``time.monotonic()`` value) ends the check sooner, for callers whose ``timeout``
    counts from an earlier start (the CLI counts it from the command's start).
    """
    with locate_ns(ns_host, ns_port) as ns:
        found = ns.yplookup(meta_all={DEVICE_TAG}, return_metadata=True)
    devices = []
    for name, (uri, metadata) in sorted(found.items()):
        host, port = _location(str(uri))
        tags = _tags(metadata)
        devices.append(
            {
                "name": name,
                "uri": str(uri),
                "class": tags.get(CLASS_TAG),
                "host": host,
                "port": port,
                "server_host": tags.get(HOST_TAG),
                "server": tags.get(SERVER_TAG),
            }
        )
    if alive:
        left = timeout if deadline is None else min(timeout, deadline - time.monotonic())
        # However late the check starts, servers get a fair chance to answer.
        verdicts = check_servers(devices, max(left, MIN_CHECK), said=timeout)
        for device in devices:
            device["alive"], device["reason"] = verdicts[server_key(device)]
    return devices


_TAGS = (CLASS_TAG, HOST_TAG, SERVER_TAG)


def _tags(metadata: Any) -> dict[str, str]:
    """The values of pyroinst's metadata tags (one pass: a lab lists thousands)."""
    found = {}
    for item in metadata:
        for prefix in _TAGS:
            if item.startswith(prefix):
                found[prefix] = item[len(prefix) :]
    return found


def _location(uri: str) -> tuple[str, int | None]:
    """Host and port of a ``PYRO:object@host:port`` URI (Pyro5's parser for others)."""
    _, at, location = uri.rpartition("@")
    host, colon, port = location.rpartition(":")
    if at and colon and port.isdigit() and not host.startswith("["):
        return host, int(port)
    parsed = Pyro5.core.URI(uri)
    return parsed.host, parsed.port


# Pyro5 proxies belong to one thread; handles share one proxy per thread and device, so
# a thousand handles hold one connection, not a thousand.
_local = threading.local()


def cached_proxy(
    uri: str, name: str | None = None, ns: tuple[str | None, int | None] = (None, None)
) -> DeviceProxy:
    """The calling thread's proxy for ``uri`` (created on first use, then reused).

    With ``name``, the proxy finds the device again through the name server (found as
    ``ns_address()`` says) if its server restarts. Its calls wait at most the default
    timeout (``default_timeout()``).
    """
    cache: dict[str, Pyro5.client.Proxy] | None = getattr(_local, "proxies", None)
    if cache is None:
        cache = _local.proxies = {}
    proxy = cache.get(uri)
    if proxy is None:
        proxy = cache[uri] = DeviceProxy(uri, name, *ns, per_thread=False)
        proxy._pyroTimeout = default_timeout()
    return proxy


def release_cached_proxies() -> None:
    """Close the calling thread's cached handle connections (they reconnect when used)."""
    cache = getattr(_local, "proxies", None) or {}
    for proxy in cache.values():
        proxy._pyroRelease()
    cache.clear()


# Job handles reach their devices through these (handles.py does not import this module).
use_client(cached_proxy, default_timeout, DeviceProxy)

"""The web server's connections to device servers: a bounded pool, released when idle.

Every request borrows a proxy for the device it uses (``borrow``) and gives it back; an
event stream's reader holds one for as long as somebody watches. Proxies are not tied
to threads (the server's worker threads come and go), so their number follows what is
in use, not how many threads ever ran. Per device server (its address) the web server
holds at most ``per_server`` connections (``max_device_connections``, default 16, well
under a device server's ``max_connections_per_host`` of 64, so a busy dashboard never
locks the CLI or other clients on the same PC out); a request that finds them all in
use waits up to ``wait`` seconds for one, then gets ``WebServerBusy`` (503). A proxy
idle for ``idle`` seconds is closed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import PyroinstError

__all__ = ["ProxyPool", "WebServerBusy", "MAX_DEVICE_CONNECTIONS"]

log = logging.getLogger(__name__)

#: Connections to one device server the web server may hold, by default.
MAX_DEVICE_CONNECTIONS = 16
#: Seconds an unused connection is kept.
IDLE = 10.0
#: Seconds a request waits for a connection when all are in use.
WAIT = 10.0


class WebServerBusy(PyroinstError):
    """The web server holds as many connections to a device server as it may."""


class _Entry:
    __slots__ = ("proxy", "name", "server", "since")

    def __init__(self, proxy: Any, name: str, server: str) -> None:
        self.proxy, self.name, self.server = proxy, name, server
        self.since = time.monotonic()


class ProxyPool:
    """Proxies by device name, at most ``per_server`` per device server (see above).

    ``open_proxy(name)`` makes a new proxy of the device ``name``; ``locate(name)`` says
    which server (``host:port``) holds it.
    """

    def __init__(
        self,
        open_proxy: Callable[[str], Any],
        per_server: int = MAX_DEVICE_CONNECTIONS,
        idle: float = IDLE,
        wait: float = WAIT,
        locate: Callable[[str], str] | None = None,
    ) -> None:
        if per_server < 1:
            raise ValueError("max_device_connections must be at least 1")
        self._open = open_proxy
        self._locate = locate
        self.per_server = per_server
        self.idle_after = idle
        self.wait = wait
        self._idle: list[_Entry] = []
        self._busy: dict[int, _Entry] = {}
        self._servers: dict[str, str] = {}  # device name -> server address (once known)
        self._creating: dict[str, int] = {}  # server -> connections being made now
        self._cond = threading.Condition()
        self._closed = False

    def held(self, server: str | None = None) -> int:
        """Connections held now (to ``server``, or in all)."""
        with self._cond:
            entries = self._idle + list(self._busy.values())
            return sum(1 for e in entries if server is None or e.server == server)

    def _count(self, server: str) -> int:
        return (
            sum(1 for e in self._idle if e.server == server)
            + sum(1 for e in self._busy.values() if e.server == server)
            + self._creating.get(server, 0)
        )

    def _prune(self, now: float) -> list[_Entry]:
        old = [e for e in self._idle if now - e.since > self.idle_after]
        if old:
            self._idle = [e for e in self._idle if e not in old]
        return old

    def _take(self, name: str) -> _Entry:
        if self._locate is not None and name not in self._servers:
            # Which server holds it, before the first connection: the bound holds from
            # the start, also when many requests for a new device arrive at once.
            server = self._locate(name)
            with self._cond:
                self._servers.setdefault(name, server)
        deadline = time.monotonic() + self.wait
        to_close: list[_Entry] = []
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise WebServerBusy("the web server is shutting down")
                    to_close += self._prune(time.monotonic())
                    for entry in reversed(self._idle):
                        if entry.name == name:
                            self._idle.remove(entry)
                            return entry
                    server = self._servers.get(name)
                    if server is None:
                        break
                    if self._count(server) < self.per_server:
                        self._creating[server] = self._creating.get(server, 0) + 1
                        break
                    # Full: make room by closing an idle connection to the same server.
                    spare = next((e for e in self._idle if e.server == server), None)
                    if spare is not None:
                        self._idle.remove(spare)
                        to_close.append(spare)
                        self._creating[server] = self._creating.get(server, 0) + 1
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise WebServerBusy(
                            f"the web server holds {self.per_server} connections to the "
                            f"server of '{name}' ({server}), all in use "
                            "(max_device_connections): try again in a moment"
                        )
                    self._cond.wait(min(left, 0.5))
        finally:
            _release(to_close)
        try:
            proxy = self._open(name)
        finally:
            if server is not None:
                with self._cond:
                    self._creating[server] -= 1
        actual = _server_of(proxy)
        with self._cond:
            self._servers[name] = actual  # where it is now (a server may have moved)
        return _Entry(proxy, name, actual)

    @contextlib.contextmanager
    def borrow(
        self, name: str, owner: str | None = None, lease: str | None = None
    ) -> Iterator[Any]:
        """A proxy of the device ``name`` for this thread, presenting ``owner`` and
        ``lease``, given back afterwards (closed instead if its connection broke)."""
        entry = self._take(name)
        proxy = entry.proxy
        proxy._pyroClaimOwnership()
        proxy._pyroinst_owner = owner
        proxy._pyroinst_lease = lease
        with self._cond:
            self._busy[id(entry)] = entry
        broken = False
        try:
            yield proxy
        except BaseException:
            broken = proxy._pyroConnection is None
            raise
        finally:
            proxy._pyroinst_owner = proxy._pyroinst_lease = None
            with self._cond:
                self._busy.pop(id(entry), None)
                keep = not (broken or self._closed)
                if keep:
                    entry.since = time.monotonic()
                    self._idle.append(entry)
                self._cond.notify_all()
            if not keep:
                _release([entry])

    def hold(self, name: str) -> Any:
        """A proxy of ``name`` held until ``give_back`` (an event stream's reader)."""
        entry = self._take(name)
        with self._cond:
            self._busy[id(entry.proxy)] = entry
        return entry.proxy

    def give_back(self, proxy: Any) -> None:
        """Close a proxy ``hold`` gave (a reader's connection is not reused)."""
        with self._cond:
            entry = self._busy.pop(id(proxy), None)
            self._cond.notify_all()
        if entry is not None:
            _release([entry])

    def prune(self) -> None:
        """Close the connections idle for longer than ``idle`` seconds."""
        with self._cond:
            old = self._prune(time.monotonic())
            self._cond.notify_all()
        _release(old)

    def close(self) -> None:
        """Close every idle connection now, and the busy ones when they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        _release(idle)


def _server_of(proxy: Any) -> str:
    uri = proxy._pyroUri
    return f"{uri.host}:{uri.port}"


def _release(entries: list[_Entry]) -> None:
    for entry in entries:
        try:
            entry.proxy._pyroClaimOwnership()
            entry.proxy._pyroRelease()
        except Exception as exc:  # noqa: BLE001 - closing: the others still go
            log.debug("releasing a proxy of %s: %s", entry.server, exc)

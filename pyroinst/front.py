"""The front of a device daemon: one thread answers the small requests of every idle
connection, so many clients' calls do not hand the interpreter lock from thread to thread.

Pyro5 serves each connection with a thread of its own. With many busy clients, each
request wakes its connection's thread, and those threads take the interpreter lock from
each other; where waking a thread on another core is slow (a virtual machine), that costs
more than the calls themselves (8 client threads, 2 cores: about 3 x the CPU time per call
of one client). So a proven connection without TLS goes, after its handshake, to the
daemon's ``Front``: one thread waits on all such connections at once (epoll) and answers
every request that has arrived whole, one after the other, in its own thread. Busy, it
goes from one connection's request to the next without sleeping.

Nothing that would hold the front stays there:

* a request that has not arrived whole within one read of ``READ_AHEAD`` bytes (a large
  upload) goes, with its connection, to a worker of the pool, which serves that
  connection from then on, as Pyro5 would (a small request sent slowly waits in the
  front, holding no thread);
* a TLS connection never comes to the front;
* a connection whose requests took more than 2 ms three times in a row (calls that wait
  on an instrument) goes to a worker, so that such calls on several devices run at once,
  as before;
* a connection that starts a job, or waits for one, goes to a worker (``to_worker``);
* a request still running after ``patience`` seconds (a measurement, a device busy with
  a job, a stream read waiting for data, a client not reading its answers): a watch
  thread hands the front's role to a new thread, and the thread running that request
  keeps its connection and serves it from then on, as its worker. Other clients wait at
  most about ``patience`` (twice that with scheduling), then are answered by the new
  front.

Requests of one connection are answered in order, one at a time, as before.

``PYROINST_FRONT_PATIENCE`` (seconds, default 0.005; ``0`` turns the front off: a worker
per connection, Pyro5's way; so does a system without epoll, Linux's). Bounds: a
connection of the front counts as a busy worker for admission (``threadpool_size``), so
one it hands on finds a worker, and the threads it starts (one per slow connection) stay
within that number; what it holds of a connection's requests is at most twice
``READ_AHEAD`` (it reads no more while a whole request waits: TCP holds the rest back).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import Any

import Pyro5.errors
from Pyro5 import config as pyro_config
from Pyro5 import protocol
from Pyro5.callcontext import current_context

from .connections import LiveConnection, ProvenJob
from .preproof import MARSHAL as _MARSHAL
from .receiving import READ_AHEAD
from .wire import local as _tls

__all__ = ["AVAILABLE", "DEFAULT_PATIENCE", "Front", "configured_patience", "to_worker"]

log = logging.getLogger(__name__)

#: Seconds a request may run in the front before the front's role passes on.
DEFAULT_PATIENCE = 0.005
_HEADER = protocol._header_size
_SIZES = struct.Struct("!II").unpack_from  # data size, annotations size, at offset 12
_KIND = struct.Struct("!BBH").unpack_from  # type, serializer, flags, at offset 6
_INVOKE = protocol.MSG_INVOKE
_CORR_ID = protocol.FLAGS_CORR_ID
_ReceivingMessage = protocol.ReceivingMessage
_DONTWAIT = socket.MSG_DONTWAIT
#: The front needs Linux's epoll; elsewhere every connection gets a worker (Pyro5's way).
AVAILABLE = hasattr(select, "epoll")
_READABLE = (select.EPOLLIN | select.EPOLLRDHUP) if AVAILABLE else 0
#: Bounded waits (seconds) of the front's and the watch's loops, to notice a close.
_POLL = 1.0
_monotonic = time.monotonic
_sleep = time.sleep
#: Seconds a request answered in the front may take and count as quick; a connection
#: with _SLOW_IN_A_ROW slower ones in a row goes to a worker (see _serve).
_QUICK = 0.002
_SLOW_IN_A_ROW = 3
#: Looks at an idle front (nothing answered in between) before the watch sleeps.
_QUIET_LOOKS = 4


def configured_patience() -> float:
    """``PYROINST_FRONT_PATIENCE`` in seconds (0: no front); the default if unset or bad.
    Always 0 where the system has no epoll."""
    if not AVAILABLE:
        return 0.0
    text = os.environ.get("PYROINST_FRONT_PATIENCE", "").strip()
    if not text:
        return DEFAULT_PATIENCE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10:
        log.warning(
            "PYROINST_FRONT_PATIENCE=%r is not usable (seconds from 0 to 10); using %s",
            text,
            DEFAULT_PATIENCE,
        )
        return DEFAULT_PATIENCE
    return value


def to_worker() -> None:
    """The connection of the call being answered gets a worker of its own after this call.

    For calls that hand work to another thread of the server or wait for one (a job's
    start, wait, result): in the front, the front's thread and the job's would take
    turns on the interpreter lock at every step (measured: start + result of a no-op job
    about 15 % slower than with a worker, where the two run side by side on two cores).
    Outside the front (a worker, TLS, no front), nothing changes.
    """
    conn = getattr(current_context, "client", None)
    if conn is not None and type(conn) is LiveConnection:
        conn._pyroinst_to_worker = True


class _Entry:
    """One connection of the front."""

    __slots__ = ("addr", "conn", "done", "fd", "readable", "recv", "release", "slow")

    def __init__(self, conn: Any, fd: int, addr: Any, release: Any) -> None:
        self.conn = conn
        self.fd = fd
        self.addr = addr
        self.recv = conn.sock.recv
        self.release = release  # the admission's: the connection's address holds one less
        self.readable = False
        self.done = False
        self.slow = 0  # requests in a row that took longer than _QUICK


class Front:
    """The front of one daemon (see the module docstring)."""

    def __init__(self, daemon: Any, server: Any, patience: float) -> None:
        self.daemon = daemon
        self.server = server
        self.patience = patience
        #: Connections of the front: waiting in it, or kept by a thread it handed on.
        self.count = 0
        self._lock = threading.Lock()
        self._epoll = select.epoll()
        self._entries: dict[int, _Entry] = {}
        # Connections with a request read already (two sent at once): answered next round.
        self._ready: collections.deque[_Entry] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._epoll.register(self._wake_r.fileno(), select.EPOLLIN)
        self._closed = False
        # The leader's request: {0: its connection} while it runs. The leader and the watch
        # each take it with one dict.pop (atomic): the leader, when the request ends in
        # time; the watch, to hand the role on. Whoever gets it decides. Each leader has
        # a dict of its own (a thread that lost the role must not take its successor's).
        self._claim: dict[int, _Entry] = {}
        self._since = 0.0
        self._idle = False
        self._active = threading.Event()
        #: Requests answered, and times the role passed on (for tests and logs).
        self.answered = 0
        self.handed_on = 0
        go = threading.Event()
        self._leader = self._thread(go)
        self._watch = threading.Thread(target=self._watching, daemon=True, name="pyroinst-watch")
        self._leader.start()
        go.set()
        self._watch.start()

    # -- the handshake thread's side -----------------------------------------------------
    def adopt(self, conn: Any, addr: Any, on_end: Any) -> None:
        """Take a proven connection (its socket blocking, as a worker's)."""
        fd = conn.sock.fileno()
        entry = _Entry(conn, fd, addr, on_end)
        with self._lock:
            if self._closed:
                raise RuntimeError("the daemon's front is closed")
            self.count += 1
            self._entries[fd] = entry
        try:
            self._epoll.register(fd, _READABLE)
        except (OSError, ValueError):
            with self._lock:
                self._entries.pop(fd, None)
                self.count -= 1
            raise

    def close(self) -> None:
        """End the front: its waiting connections are closed, its threads end."""
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
        self._active.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        for entry in entries:
            self._end(entry, unregister=False)  # a request being answered ends with an error
        leader = self._leader
        if leader is not threading.current_thread():
            leader.join(5.0)
        self._watch.join(self.patience + 5.0)
        with contextlib.suppress(OSError):
            self._epoll.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the front's thread --------------------------------------------------------------
    def _thread(self, go: threading.Event) -> threading.Thread:
        return threading.Thread(target=self._lead, args=(go,), daemon=True, name="pyroinst-front")

    def _lead(self, go: threading.Event) -> None:
        go.wait(_POLL)  # until the role is this thread's (or not, then it ends at once)
        me = threading.current_thread()
        claim: dict[int, _Entry] = {}
        if self._leader is me:
            self._claim = claim
        poll = self._epoll.poll
        entries = self._entries
        ready = self._ready
        serve = self._serve
        wake = self._wake_r.fileno()
        active = self._active
        while self._leader is me and not self._closed:
            try:
                if ready:
                    events = poll(0)
                else:
                    self._idle = True
                    events = poll(_POLL)
                    self._idle = False
                    if not active.is_set():
                        active.set()  # the watch looks again (it sleeps while the front idles)
            except (OSError, ValueError):
                return  # closed
            for fd, _mask in events:
                entry = entries.get(fd)
                if entry is None:
                    if fd == wake:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    continue
                entry.readable = True
                if not serve(entry, me, claim):
                    return  # handed on: this thread served that connection to its end
            for _ in range(len(ready)):
                if not serve(ready.popleft(), me, claim):
                    return

    def _serve(self, entry: _Entry, me: threading.Thread, claim: dict[int, _Entry]) -> bool:
        """Answer ``entry``'s request if it is whole; False if the role passed on meanwhile
        (this thread then serves the connection to its end before returning)."""
        conn = entry.conn
        ahead = conn.__dict__.get("_pyroinst_ahead")
        readable = entry.readable
        entry.readable = False  # (epoll tells again while something is unread)
        if readable and (
            # Read only while no whole request waits: a client sending faster than it is
            # answered is held back by TCP, not buffered here (at most 2 x READ_AHEAD).
            ahead is None or len(ahead) < _HEADER or len(ahead) < _HEADER + sum(_SIZES(ahead, 12))
        ):
            try:
                data = entry.recv(READ_AHEAD, _DONTWAIT)
            except (BlockingIOError, InterruptedError, TimeoutError):
                data = None  # (a socket with a timeout polls first: epoll said it is ready)
            except OSError:
                data = b""
            if data is not None:
                if not data:
                    self._end(entry)  # the client closed it (or it failed)
                    return True
                conn._pyroinst_ahead = ahead = data if ahead is None else bytes(ahead) + data
        if ahead is None or len(ahead) < _HEADER:
            return True  # the rest comes with the next read
        data_size, annotations_size = _SIZES(ahead, 12)
        need = _HEADER + data_size + annotations_size
        if len(ahead) < need:
            if need > READ_AHEAD:
                self._to_worker(entry)  # a large message: read by a worker, as before
            return True
        self._since = since = _monotonic()
        claim[0] = entry
        try:
            mtype, serializer_id, flags = _KIND(ahead, 6)
            if (
                mtype == _INVOKE
                and not annotations_size
                and not flags & ~_CORR_ID
                and serializer_id != _MARSHAL
                and need <= pyro_config.MAX_MESSAGE_SIZE
                and not pyro_config.LOGWIRE
            ):
                # A plain call (most are): what recv_stub and handleRequest would do with it.
                msg = _ReceivingMessage(ahead[:_HEADER])  # (checks the rest of the header)
                msg.data = ahead[_HEADER:need]
                conn._pyroinst_ahead = ahead[need:] if len(ahead) > need else None
                _tls.incoming, _tls.received = None, ()
                self.daemon._pyroinst_plain(conn, msg)
            else:
                self.daemon.handleRequest(conn)
        except Exception as exc:  # noqa: BLE001 - what Pyro5's worker loop does with it
            _log_end(conn, exc)
            leading = claim.pop(0, None) is not None
            self._end(entry)
            return leading
        self.answered += 1
        if claim.pop(0, None) is None:
            # The watch handed the role on: this thread is the connection's worker now.
            ProvenJob(conn, entry.addr, self.daemon, lambda: self._ended(entry))()
            return False
        if conn.__dict__.get("_pyroinst_to_worker"):
            self._to_worker(entry)  # (see to_worker)
            return True
        if _monotonic() - since > _QUICK:
            # Calls that wait (an instrument's I/O) but not for ``patience``: answered here
            # one after the other, they would keep other devices' calls from running
            # meanwhile. A few in a row and the connection gets a worker of its own.
            entry.slow += 1
            if entry.slow >= _SLOW_IN_A_ROW:
                self._to_worker(entry)
                return True
        else:
            entry.slow = 0
        if conn.__dict__.get("_pyroinst_ahead") is not None:
            self._ready.append(entry)  # another request read already
        return True

    def _to_worker(self, entry: _Entry) -> None:
        with self._lock:
            self._forget(entry)
            if entry.done:
                return
            entry.done = True
            self.count -= 1
        try:
            self.server.pool.process(ProvenJob(entry.conn, entry.addr, self.daemon, entry.release))
        except Exception as exc:  # noqa: BLE001 - no worker: the client sees the close
            log.warning("could not give a connection a worker: %s", exc)
            with contextlib.suppress(OSError):
                entry.conn.close()
            entry.release()

    def _forget(self, entry: _Entry) -> None:
        """No more events of ``entry``'s connection (called with the lock held)."""
        if self._entries.get(entry.fd) is entry:
            del self._entries[entry.fd]
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(entry.fd)

    def _end(self, entry: _Entry, unregister: bool = True) -> None:
        if unregister:
            with self._lock:
                self._forget(entry)
        conn = entry.conn
        try:
            self.daemon._clientDisconnect(conn)
        except Exception as exc:  # noqa: BLE001 - as Pyro5's worker loop
            log.warning("Error in clientDisconnect: %s", exc)
        with contextlib.suppress(OSError):
            conn.close()
        self._ended(entry)

    def _ended(self, entry: _Entry) -> None:
        with self._lock:
            if entry.done:
                return
            entry.done = True
            self.count -= 1
        entry.release()

    # -- the watch -----------------------------------------------------------------------
    def _watching(self) -> None:
        # One look per ``patience`` while the front works; asleep (until the front's next
        # request) once it answered nothing for a few looks in a row. Each look costs a
        # wake-up and the interpreter lock: a front answering one client at a time would
        # otherwise wake this thread twice per look (it idles between every two requests).
        patience = self.patience
        quiet = 0
        seen = -1
        while not self._closed:
            if quiet >= _QUIET_LOOKS:
                self._active.clear()
                if self._idle:
                    self._active.wait(_POLL)
                    continue
                quiet = 0
            _sleep(patience)
            if self._claim and _monotonic() - self._since >= patience:
                self._hand_on()
            answered = self.answered
            quiet = quiet + 1 if answered == seen and self._idle else 0
            seen = answered

    def _hand_on(self) -> None:
        """Give the role to a new thread, if the request running now still runs."""
        go = threading.Event()
        new = self._thread(go)
        try:
            new.start()  # first: with no new thread, nothing changes
        except RuntimeError as exc:
            log.warning("the front's role stays with a busy thread (no new thread: %s)", exc)
            return
        entry = self._claim.pop(0, None)
        if entry is not None:
            with self._lock:
                if not self._closed:
                    self._leader = new
                # The slow request's connection stays with its thread: not the new front's.
                self._forget(entry)
            self.handed_on += 1
            log.debug("a request ran over %.3f s: the front passed on", self.patience)
        go.set()  # the new thread leads, or (the request ended meanwhile) ends at once


def _log_end(conn: Any, exc: Exception) -> None:
    """What Pyro5's worker loop logs when a connection's request ends it."""
    if isinstance(exc, (OSError, Pyro5.errors.ConnectionClosedError)):
        log.debug("disconnected %s", getattr(conn, "sock", None))
    elif isinstance(exc, Pyro5.errors.SecurityError):
        log.debug("security error on client %s", getattr(conn, "sock", None))
    elif isinstance(exc, Pyro5.errors.TimeoutError):
        log.warning("error during handleRequest: %s", exc)
    else:
        tb = Pyro5.errors.format_traceback(*sys.exc_info())
        log.warning("error during handleRequest: %s; %s", exc, "".join(tb))

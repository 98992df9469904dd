"""New connections, carried through their handshake by one thread, before any worker.

A pyroinst daemon (device server or name server) hands every accepted connection to its
``Handshaker``: one selector thread that reads, without blocking, the TLS handshake, the
client's ``CONNECT`` and, with a token, the client's proof, and answers each. Only a
connection whose handshake is complete gets one of the daemon's worker threads. So:

* a client that sends slowly or nothing holds a socket, never a worker, and only until
  its absolute deadline: ``handshake_timeout`` seconds from accept (monotonic clock);
* ``max_pending_handshakes`` (default 256) connections may be in their handshake at
  once, and one address at most an eighth of that (at least 8); more are refused at once;
* what a client sends before its proof is checked by header before it is read, and
  decoded only within bounds (``pyroinst.preproof``): no marshal, nothing compressed,
  at most ``PREPROOF_MAX`` bytes a message;
* a refused proof is answered after the failure delay of its address
  (``admission.FailureTracker``) by a timer of this thread, never by a sleeping worker.

The handshake itself is the daemon's own (Pyro5's ``_handshake`` with pyroinst's token
protocol, ``AuthDaemon``), run on a ``HandshakeConnection`` that holds the complete
message read so far and collects the answer, which this thread then sends.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import ssl
import threading
import time
from typing import Any

import Pyro5.errors
from Pyro5 import config as pyro_config
from Pyro5 import protocol, svr_threads

from . import preproof
from .auth import _connect_fail
from .connections import HEADER as _HEADER
from .connections import HandshakeConnection, PendingConnection, ProvenJob
from .errors import MessageRefused

__all__ = ["DEFAULT_MAX_PENDING_HANDSHAKES", "HandshakeConnection", "Handshaker"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING_HANDSHAKES = 256
#: Seconds a refused connection is kept open to read what its client still sends (closing
#: with unread data would reset the connection before the client reads the answer).
_LINGER = 1.0


class Handshaker:
    """The handshake thread of one daemon (see the module docstring).

    ``server`` is the daemon's transport server (its ``pool`` gets proven connections),
    ``admission`` counts connections per address (released here for connections that
    never reach a worker), ``tls`` the server's SSL context or None.
    """

    def __init__(
        self,
        daemon: Any,
        server: Any,
        admission: Any,
        tls: ssl.SSLContext | None,
        max_pending: int = DEFAULT_MAX_PENDING_HANDSHAKES,
        sniff: bool = False,
    ) -> None:
        self.daemon = daemon
        # With the token's TLS on a plain listening socket, a connection's first byte says
        # whether it starts TLS (0x16, a TLS record) or is a plain Pyro5 script.
        self.sniff = bool(sniff and tls is not None)
        self.server = server
        self.admission = admission
        self.tls = tls
        self.max_pending = int(max_pending)
        self.max_pending_per_host = max(8, self.max_pending // 8)
        self.timeout = float(admission.handshake_timeout)
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._incoming: collections.deque[PendingConnection] = collections.deque()
        self._count = 0
        # Answered "go on" but not yet in the pool's busy set: the accept loop counts
        # these as taken, or a quick client could be admitted past the reserve.
        self._promised = 0
        self._per_host: dict[str, int] = {}
        self._pending: set[PendingConnection] = set()
        self._timers: list[tuple[float, int, PendingConnection]] = []
        self._seq = itertools.count()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="pyroinst-handshakes")
        self._thread.start()

    # -- the accept loop's side ----------------------------------------------------------
    def offer(self, sock: socket.socket, addr: Any, refusal: str | None = None) -> str | None:
        """Take a newly accepted connection; or the reason to refuse it (not taken).

        With ``refusal``, the connection is refused already (it was not counted by the
        admission): it is carried through TLS only to be told ``refusal``."""
        host = str(addr[0]) if isinstance(addr, tuple) and addr else "?"
        with self._lock:
            if self._count >= self.max_pending:
                return (
                    f"server busy: {self._count} connections are completing their handshake, "
                    f"the most its max_pending_handshakes ({self.max_pending}) allows. Try "
                    "again in a moment; if this persists, someone is flooding this server."
                )
            held = self._per_host.get(host, 0)
            if held >= self.max_pending_per_host:
                return (
                    f"server busy: {host} has {held} connections completing their handshake, "
                    f"the most one address may have ({self.max_pending_per_host}, an eighth of "
                    "max_pending_handshakes). Try again in a moment."
                )
            self._count += 1
            self._per_host[host] = held + 1
            deadline = time.monotonic() + self.timeout
            self._incoming.append(PendingConnection(sock, addr, deadline, refusal))
        self._wake()
        return None

    def pending(self) -> int:
        """Connections in their handshake now."""
        return self._count

    def _keep_promise(self, pending: PendingConnection) -> None:
        if pending.then == "worker":
            pending.then = ""
            with self._lock:
                self._promised -= 1

    def close(self) -> None:
        """Close every connection still in its handshake and end the thread."""
        self._stop = True
        self._wake()
        self._thread.join(5.0)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop:
                timeout = 0.5
                if self._timers:
                    timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
                for key, mask in self._selector.select(timeout):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                        continue
                    self._guarded(key.data, mask)
                self._take_incoming()
                self._fire_timers()
        finally:
            for pending in list(self._pending):
                self._close(pending)
            with self._lock:
                incoming, self._incoming = list(self._incoming), collections.deque()
            for pending in incoming:
                self._pending.add(pending)
                self._close(pending)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _take_incoming(self) -> None:
        while True:
            with self._lock:
                if not self._incoming:
                    return
                pending = self._incoming.popleft()
            self._pending.add(pending)
            self._at(pending.deadline, pending)
            try:
                pending.sock.setblocking(False)
                if self.sniff:
                    pending.state = "sniff"
                elif self.tls is not None:
                    self._start_tls(pending)
                else:
                    pending.state = "read"
            except (OSError, ValueError) as exc:
                self.admission.timeouts.note(pending.host, f"accepting: {exc}")
                self._close(pending)
                continue
            self._guarded(pending, selectors.EVENT_READ)

    def _at(self, when: float, pending: PendingConnection) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), pending))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, pending = heapq.heappop(self._timers)
            if pending.closed:
                continue
            if pending.state == "wait":
                if pending.not_before <= now:
                    pending.state = "send"
                    self._guarded(pending, selectors.EVENT_WRITE)
            elif pending.state == "linger":
                self._close(pending)
            elif pending.deadline <= now:
                self.admission.timeouts.note(
                    pending.host, f"no complete handshake within {self.timeout:g} s"
                )
                self._close(pending)

    def _want(self, pending: PendingConnection, events: int) -> None:
        if pending.events == events:
            return
        try:
            if pending.events:
                self._selector.modify(pending.sock, events, pending)
            else:
                self._selector.register(pending.sock, events, pending)
            pending.events = events
        except (OSError, ValueError, KeyError):
            self._close(pending)

    def _guarded(self, pending: PendingConnection, mask: int) -> None:
        if pending.closed:
            return
        try:
            self._step(pending, mask)
        except Exception:  # noqa: BLE001 - one client's fault never stops the thread
            log.warning("handshake with %s failed", pending.host, exc_info=True)
            self._close(pending)

    def _start_tls(self, pending: PendingConnection) -> None:
        assert self.tls is not None
        if pending.events:
            self._selector.unregister(pending.sock)
            pending.events = 0
        pending.sock = self.tls.wrap_socket(
            pending.sock, server_side=True, do_handshake_on_connect=False
        )
        pending.conn = HandshakeConnection(pending.sock)
        pending.state = "tls"

    def _step(self, pending: PendingConnection, mask: int) -> None:
        if pending.state == "sniff":
            try:
                first = pending.sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return self._want(pending, selectors.EVENT_READ)
            except (OSError, ValueError):
                return self._close(pending)
            if not first:
                return self._close(pending)  # the client went away
            if first == b"\x16":
                self._start_tls(pending)
            else:
                pending.state = "read"
        if pending.state == "tls":
            try:
                pending.sock.do_handshake()
            except ssl.SSLWantReadError:
                return self._want(pending, selectors.EVENT_READ)
            except ssl.SSLWantWriteError:
                return self._want(pending, selectors.EVENT_WRITE)
            except (OSError, ValueError) as exc:
                self.admission.timeouts.note(pending.host, f"TLS handshake: {exc}")
                return self._close(pending)
            pending.state = "read"
        if pending.state == "read":
            return self._read(pending)
        if pending.state == "send":
            return self._send(pending)
        if pending.state == "linger":
            return self._drain(pending)
        return None

    # -- reading -------------------------------------------------------------------------
    def _read(self, pending: PendingConnection) -> None:
        sock = pending.sock
        while True:
            missing = pending.need - len(pending.buf)
            if missing <= 0:
                if not self._complete(pending):
                    return
                if pending.state != "read":
                    return
                continue
            try:
                chunk = sock.recv(missing)
            except (BlockingIOError, ssl.SSLWantReadError):
                return self._want(pending, selectors.EVENT_READ)
            except ssl.SSLWantWriteError:
                return self._want(pending, selectors.EVENT_WRITE)
            except (OSError, ValueError):
                return self._close(pending)
            if not chunk:
                return self._close(pending)  # the client went away
            pending.buf += chunk

    def _complete(self, pending: PendingConnection) -> bool:
        """A header or a whole message is in the buffer: check it or answer it."""
        data = bytes(pending.buf)
        try:
            protocol.ReceivingMessage.validate(data[:_HEADER])
            msg = protocol.ReceivingMessage(data[:_HEADER])
        except (Pyro5.errors.ProtocolError, ValueError) as exc:
            self.admission.timeouts.note(pending.host, f"not a Pyro5 handshake: {exc}")
            self._close(pending)
            return False
        if len(data) == _HEADER:
            what = f"refused a handshake from {pending.host}"
            try:
                preproof.check_header(msg, pending.accepted, preproof.PREPROOF_MAX, what)
            except MessageRefused as exc:
                self.admission.timeouts.note(pending.host, str(exc).split(": ", 1)[-1])
                self._refuse(pending, msg, str(exc).split(": ", 1)[-1])
                return False
            if pending.refusal is not None:
                self._refuse(pending, msg, pending.refusal)
                return False
            pending.need = _HEADER + msg.data_size + msg.annotations_size
            if pending.need > _HEADER:
                return True
        pending.buf = bytearray()
        pending.need = _HEADER
        pending.conn.feed(data)
        if msg.type == protocol.MSG_CONNECT:
            self._answer_connect(pending, msg, data)
        else:
            self._answer_proof(pending, msg)
        return False

    # -- answering -----------------------------------------------------------------------
    def free_workers(self) -> int:
        """Workers free for new connections: those of the pool not busy, less the ones
        promised to connections told their handshake is complete."""
        pool = self.server.pool
        if pool is None:
            return 0
        front = getattr(self.server, "front", None)
        held = front.count if front is not None else 0
        return pyro_config.THREADPOOL_SIZE - len(pool.busy) - self._promised - held

    def _busy_reason(self) -> str:
        return (
            f"server busy: all {pyro_config.THREADPOOL_SIZE} connections of this server are "
            "in use (no free workers; its threadpool_size). Close idle clients, or raise "
            "threadpool_size ([server] in the lab file)."
        )

    def _answer_connect(self, pending: PendingConnection, msg: Any, data: bytes) -> None:
        body = data[_HEADER + msg.annotations_size :]
        try:
            preproof.bounded_loads(msg.serializer_id, body, preproof.BODY_MAX, preproof.BODY_ITEMS)
        except MessageRefused as exc:
            self.admission.timeouts.note(pending.host, str(exc))
            self._refuse(pending, msg, f"refused: {exc}")
            return
        conn = pending.conn
        denied = None if self.free_workers() > 0 else self._busy_reason()
        accepted = self.daemon._handshake(conn, denied)
        out = conn.take_output()
        delay = float(conn.__dict__.pop("_pyroinst_delay", 0.0))
        if not accepted:
            return self._answer(pending, out, "close", delay)
        if getattr(conn, "_pyroinst_challenge", None) is not None:
            pending.accepted = (protocol.MSG_PING,)
            return self._answer(pending, out, "proof")
        return self._answer(pending, out, "worker")

    def _answer_proof(self, pending: PendingConnection, msg: Any) -> None:
        conn = pending.conn
        if self.free_workers() <= 0:
            out = _connect_fail(msg.seq, msg.serializer_id, self._busy_reason())
            return self._answer(pending, out, "close")
        try:
            self.daemon.handleRequest(conn)
        except Exception as exc:  # noqa: BLE001 - SecurityError: a refused proof
            log.debug("proof from %s refused: %s", pending.host, exc)
            out = conn.take_output()
            delay = float(conn.__dict__.pop("_pyroinst_delay", 0.0))
            return self._answer(pending, out, "close", delay)
        if getattr(conn, "_pyroinst_challenge", None) is not None:
            return self._answer(pending, conn.take_output(), "close")
        return self._answer(pending, conn.take_output(), "worker")

    def _refuse(self, pending: PendingConnection, msg: Any, reason: str) -> None:
        if msg.serializer_id == preproof.MARSHAL and msg.type == protocol.MSG_CONNECT:
            out = preproof.marshal_refusal(msg)
        else:
            out = _connect_fail(msg.seq, msg.serializer_id, reason)
        self._answer(pending, out, "close")

    def _answer(
        self, pending: PendingConnection, out: bytes, then: str, delay: float = 0.0
    ) -> None:
        pending.out = memoryview(out)
        pending.then = then
        if then == "worker":
            with self._lock:
                self._promised += 1
        if delay > 0:
            # A refused proof waits for its address's turn: a timer, not a thread.
            pending.state = "wait"
            pending.not_before = time.monotonic() + delay
            self._at(pending.not_before, pending)
            if pending.events:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    self._selector.unregister(pending.sock)
                pending.events = 0
            return
        pending.state = "send"
        self._send(pending)

    def _send(self, pending: PendingConnection) -> None:
        while pending.out.nbytes:
            try:
                sent = pending.sock.send(pending.out)
            except (BlockingIOError, ssl.SSLWantWriteError):
                return self._want(pending, selectors.EVENT_WRITE)
            except ssl.SSLWantReadError:
                return self._want(pending, selectors.EVENT_READ)
            except (OSError, ValueError):
                return self._close(pending)
            pending.out = pending.out[sent:]
        then = pending.then
        if then == "proof":
            pending.state = "read"
            return self._read(pending)
        if then == "worker":
            return self._hand_over(pending)
        # A refusal: stop writing, read what the client still sends, then close.
        pending.state = "linger"
        if not isinstance(pending.sock, ssl.SSLSocket):
            with contextlib.suppress(OSError):
                pending.sock.shutdown(socket.SHUT_WR)
        self._at(time.monotonic() + _LINGER, pending)
        self._want(pending, selectors.EVENT_READ)
        return None

    def _drain(self, pending: PendingConnection) -> None:
        try:
            while pending.sock.recv(4096):
                pass
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (OSError, ValueError):
            pass
        self._close(pending)

    # -- leaving -------------------------------------------------------------------------
    def _forget(self, pending: PendingConnection) -> None:
        pending.closed = True
        self._pending.discard(pending)
        if pending.events:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._selector.unregister(pending.sock)
            pending.events = 0
        with self._lock:
            self._count -= 1
            held = self._per_host.get(pending.host, 0) - 1
            if held > 0:
                self._per_host[pending.host] = held
            else:
                self._per_host.pop(pending.host, None)

    def _close(self, pending: PendingConnection) -> None:
        if pending.closed:
            return
        self._keep_promise(pending)
        self._forget(pending)
        with contextlib.suppress(OSError):
            pending.sock.close()
        if pending.refusal is None:
            self.admission.release(pending.host)

    def _hand_over(self, pending: PendingConnection) -> None:
        self._forget(pending)
        conn = pending.conn
        host = pending.host
        try:
            pending.sock.setblocking(True)
            pending.sock.settimeout(pyro_config.COMMTIMEOUT or None)
            conn.go_live()
            release = lambda: self.admission.release(host)  # noqa: E731
            front = getattr(self.server, "front", None)
            if front is not None and not isinstance(pending.sock, ssl.SSLSocket):
                front.adopt(conn, pending.addr, release)
            else:
                self.server.pool.process(ProvenJob(conn, pending.addr, self.daemon, release))
        except (svr_threads.PoolError, RuntimeError, OSError, AttributeError) as exc:
            # No worker after all (or no thread could start): the client sees the close.
            log.warning("could not give the connection of %s a worker: %s", host, exc)
            with contextlib.suppress(OSError):
                pending.sock.close()
            self.admission.release(host)
        finally:
            self._keep_promise(pending)

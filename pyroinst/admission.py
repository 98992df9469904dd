"""Who gets a connection: limits per address, a reserve, a handshake deadline, slow refusals.

Pyro5's thread-pool server gives every accepted connection one worker thread from accept
on, and its accept loop itself waits for a refused client's handshake. A process that
opens a few hundred TCP connections and sends nothing takes the whole pool. pyroinst's
daemons (device servers, name servers) accept differently (``GuardedThreadpoolServer``):

* ``max_connections_per_host`` (default 64): an address holding that many connections
  gets no more. The client is answered at once with a ``CONNECTFAIL`` that names the
  address and the setting (a pyroinst client raises ``ServerBusy``; a plain Pyro5 proxy
  raises ``CommunicationError: connection to ... rejected: server busy: ...``).
* a reserve: when no more than ``reserve`` workers are free (an eighth of
  ``threadpool_size``, at least 4), only addresses holding fewer than ``FEW`` (8)
  connections get one, so one host cannot take the whole pool.
* ``handshake_timeout`` (default 5 s): a connection that has not completed its handshake
  (TLS, Pyro5's ``CONNECT`` and, with a token, the proof) within it is closed.
* refusals never block the accept loop: one thread answers and closes refused sockets.

``FailureTracker`` makes failed authentications cost the address they come from: after
``FREE_FAILURES`` (3) in the last ``FORGET`` seconds (10 min), each refusal waits
0.125 s, 0.25 s, 0.5 s, then 1 s (``DELAY_CAP``) after that address's previous refusal, so
tries in parallel queue up: one address gets at most one refusal a second. A success from
the address starts it afresh; calls that authenticate are never delayed, and other
addresses are not slowed. Failures, refusals and timeouts are logged as one
warning per address and minute (``Summary``), not one line per attempt.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import OrderedDict
from typing import Any

from Pyro5 import config as pyro_config
from Pyro5 import protocol, svr_threads

from . import preproof
from .auth import _connect_fail
from .front import Front, configured_patience
from .handshakes import DEFAULT_MAX_PENDING_HANDSHAKES, Handshaker

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS_PER_HOST",
    "Summary",
    "FailureTracker",
    "Admission",
    "GuardedThreadpoolServer",
    "AdmissionDaemon",
]

log = logging.getLogger(__name__)

DEFAULT_HANDSHAKE_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS_PER_HOST = 64
#: Addresses holding fewer connections than this may use the reserve.
FEW = 8
#: Failures from an address refused at once (typos, a wrong token file) before delays.
FREE_FAILURES = 3
DELAY_BASE = 0.125
DELAY_CAP = 1.0
#: Seconds after its last failure an address's count is forgotten.
FORGET = 600.0
#: Seconds between two warnings about the same address and kind of event.
LOG_EVERY = 60.0
#: Seconds a refused socket is kept to read what its client still sends (then closed).
_LINGER = 1.0
_HEADER_SIZE = protocol._header_size
_MAX_LINGERING = 1024


class Summary:
    """Warnings about events per address: the first at once, then one per LOG_EVERY
    seconds that counts the rest (``what`` is %-formatted with the address)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._pending: dict[str, list[Any]] = {}  # host -> [count, since, latest detail]
        self._logged: dict[str, float] = {}
        self._lock = threading.Lock()

    def note(self, host: str, detail: str) -> None:
        """One more event from ``host``."""
        now = time.monotonic()
        with self._lock:
            if now - self._logged.get(host, -LOG_EVERY) >= LOG_EVERY:
                self._logged[host] = now
                first = True
            else:
                entry = self._pending.setdefault(host, [0, now, ""])
                entry[0] += 1
                entry[2] = detail
                first = False
        if first:
            log.warning("%s %s: %s", self.what, host, detail)
        else:
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Log the counts whose minute is over (all of them with ``force``)."""
        now = time.monotonic()
        due = []
        with self._lock:
            for host, (count, since, detail) in list(self._pending.items()):
                if force or now - self._logged.get(host, -LOG_EVERY) >= LOG_EVERY:
                    due.append((host, count, now - since, detail))
                    del self._pending[host]
                    self._logged[host] = now
            for host in [h for h, t in self._logged.items() if now - t > FORGET]:
                if host not in self._pending:
                    del self._logged[host]
        for host, count, span, detail in due:
            log.warning(
                "%s %s: %d more in the last %.0f s (latest: %s)",
                self.what,
                host,
                count,
                max(span, 1.0),
                detail,
            )


class FailureTracker:
    """Failed authentications per address: how long each refusal waits, and the log."""

    def __init__(self) -> None:
        # host -> [failures, time of the last one, when its next refusal may go out]
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.summary = Summary("failed authentication from")

    def failed(self, host: str, why: str) -> float:
        """Note a failure from ``host``; returns the seconds to wait before refusing it.

        After FREE_FAILURES, each refusal waits ``DELAY_BASE * 2**k`` (at most DELAY_CAP)
        after the address's previous refusal: tries in parallel queue up, so an address
        gets at most one refusal per DELAY_CAP however many connections it opens.
        """
        now = time.monotonic()
        with self._lock:
            entry = self._failures.get(host)
            if entry is None or now - entry[1] > FORGET:
                entry = self._failures[host] = [0, now, now]
            entry[0] += 1
            entry[1] = now
            count = int(entry[0])
            step = 0.0
            if count > FREE_FAILURES:
                step = min(DELAY_CAP, DELAY_BASE * 2 ** min(count - FREE_FAILURES - 1, 16))
            slot = max(now, entry[2]) + step
            entry[2] = slot
            if len(self._failures) > 10_000:  # a scan from many addresses: keep the newest
                for old in sorted(self._failures, key=lambda h: self._failures[h][1])[:5000]:
                    del self._failures[old]
        delay = slot - now
        self.summary.note(host, f"{why} (failure {count}; refused after {delay:.1f} s)")
        return delay

    def succeeded(self, host: str) -> None:
        """A client at ``host`` proved the token: its failures are forgotten."""
        if self._failures:
            with self._lock:
                self._failures.pop(host, None)

    def count(self, host: str) -> int:
        """Recent failures from ``host``."""
        entry = self._failures.get(host)
        return 0 if entry is None else int(entry[0])


class Admission:
    """The connections each address holds, and whether it may open one more."""

    def __init__(self, max_per_host: int, handshake_timeout: float) -> None:
        self.max_per_host = int(max_per_host)
        self.handshake_timeout = float(handshake_timeout)
        self.held: dict[str, int] = {}
        self._lock = threading.Lock()
        self.refusals = Summary("refused a connection from")
        self.timeouts = Summary("closed a connection that did not complete its handshake from")

    def admit(self, host: str, free_workers: int, pool_size: int) -> str | None:
        """Count a new connection of ``host``; or the reason to refuse it (not counted)."""
        reserve = max(4, pool_size // 8)
        with self._lock:
            held = self.held.get(host, 0)
            if held >= self.max_per_host:
                return (
                    f"server busy: {host} already holds {held} connections to this server, "
                    f"the most its max_connections_per_host ({self.max_per_host}) allows. "
                    "Close idle connections there, or raise max_connections_per_host "
                    "([server] in the lab file, --max-connections-per-host)."
                )
            if free_workers <= 0:
                return (
                    f"server busy: all {pool_size} connections of this server are in use "
                    "(no free workers; its threadpool_size). Close idle clients, or raise "
                    "threadpool_size ([server] in the lab file)."
                )
            if free_workers <= reserve and held >= FEW:
                return (
                    f"server busy: only its reserve of {free_workers} connections is left, "
                    f"kept for addresses holding fewer than {FEW}; {host} holds {held}. "
                    "Close idle connections there, or raise threadpool_size ([server] in "
                    "the lab file)."
                )
            self.held[host] = held + 1
        return None

    def release(self, host: str) -> None:
        """A connection of ``host`` closed."""
        with self._lock:
            held = self.held.get(host, 0) - 1
            if held > 0:
                self.held[host] = held
            else:
                self.held.pop(host, None)


class _Refused:
    """A refused connection: its reason, and what its client sent so far."""

    __slots__ = ("reason", "header", "answered", "until")

    def __init__(self, reason: str, until: float) -> None:
        self.reason = reason
        self.header = b""
        self.answered = False
        self.until = until


class _Refuser:
    """One thread that answers refused connections and closes them without blocking.

    It waits (at most ``_LINGER`` seconds) for the client's ``CONNECT`` header, so that the
    ``CONNECTFAIL`` goes out in the serializer the client speaks (a pyroinst client takes
    a handshake answer only in its own), then reads what the client still sends and closes.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lingering: OrderedDict[socket.socket, _Refused] = OrderedDict()
        self._incoming: list[tuple[socket.socket, str | None]] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="pyroinst-refuser")
        self._thread.start()

    def refuse(self, sock: socket.socket, reason: str, tls: bool) -> None:
        """Answer ``sock`` with a CONNECTFAIL saying ``reason`` (TLS: just close) and close it."""
        with self._lock:
            self._incoming.append((sock, None if tls else reason))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _take(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        now = time.monotonic()
        for sock, reason in incoming:
            if reason is None:
                sock.close()  # TLS: closed without an answer
                continue
            try:
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ)
            except (OSError, ValueError):
                sock.close()
                continue
            self._lingering[sock] = _Refused(reason, now + _LINGER)
            if len(self._lingering) > _MAX_LINGERING:
                self._drop(next(iter(self._lingering)))

    def _answer(self, sock: socket.socket, refused: _Refused) -> None:
        refused.answered = True
        header = refused.header
        seq, serializer_id = 0, preproof.JSON
        if len(header) >= _HEADER_SIZE and header.startswith(b"PYRO"):
            fields = struct.unpack(protocol._header_format, header[:_HEADER_SIZE])
            seq = fields[5]
            if fields[3] in preproof.NAMES:
                serializer_id = fields[3]
        with contextlib.suppress(OSError, ValueError):
            sock.send(_connect_fail(seq, serializer_id, refused.reason))
            sock.shutdown(socket.SHUT_WR)

    def _drop(self, sock: socket.socket) -> None:
        self._lingering.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)
        sock.close()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(0.25):
                sock = key.fileobj
                if sock is self._wake_r:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                refused = self._lingering.get(sock)  # type: ignore[call-overload]
                if refused is None:
                    continue
                try:
                    # Read what the client sends: closing with unread data would reset
                    # the connection before the client reads the answer.
                    data = sock.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if data:
                    if not refused.answered:
                        refused.header += data[: _HEADER_SIZE - len(refused.header)]
                        if len(refused.header) >= _HEADER_SIZE:
                            self._answer(sock, refused)  # type: ignore[arg-type]
                    continue
                if not refused.answered:
                    self._answer(sock, refused)  # type: ignore[arg-type]
                self._drop(sock)  # type: ignore[arg-type]
            self._take()
            now = time.monotonic()
            for sock, refused in list(self._lingering.items()):
                if refused.until > now:
                    continue
                if not refused.answered:
                    # Nothing (or no complete header) in time: answer as json, close soon.
                    self._answer(sock, refused)
                    refused.until = now + _LINGER
                    continue
                self._drop(sock)
        for sock in list(self._lingering):
            self._drop(sock)
        with self._lock:
            for sock, _ in self._incoming:
                sock.close()
            self._incoming = []

    def close(self) -> None:
        """Close every refused socket and end the thread."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(5.0)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


class GuardedThreadpoolServer(svr_threads.SocketServer_Threadpool):
    """Pyro5's thread-pool socket server, accepting as the module docstring says: a new
    connection goes to the handshake thread (``pyroinst.handshakes``), and only a
    connection whose handshake is complete gets a worker."""

    admission: Admission
    refuser: _Refuser
    handshaker: Handshaker
    #: The daemon's front (pyroinst.front), where it has one.
    front: Front | None = None

    def guard(
        self, admission: Admission, max_pending: int, tls: ssl.SSLContext | None = None
    ) -> None:
        """Use ``admission``'s limits from now on (and start the refusing and handshake
        threads). ``tls``: the token's TLS context, for a listening socket without TLS of
        its own (a lab CA's): connections then start TLS or, plain Pyro5 scripts, not."""
        self.admission = admission
        self.refuser = _Refuser()
        if isinstance(self.sock, ssl.SSLSocket):
            context, sniff = self.sock.context, False
        else:
            context, sniff = tls, tls is not None
        self.handshaker = Handshaker(self.daemon, self, admission, context, max_pending, sniff)
        patience = configured_patience()
        if patience > 0 and getattr(self.daemon, "_pyroinst_front", False):
            self.front = Front(self.daemon, self, patience)

    def events(self, eventsockets: Any) -> None:
        """Accept one connection, if one is waiting: admit it to the handshake thread, or
        refuse it."""
        assert self.sock in eventsockets
        with contextlib.suppress(socket.timeout):
            if not self._selector.select(pyro_config.POLLTIMEOUT):
                return
            tls = isinstance(self.sock, ssl.SSLSocket)
            # The plain accept: an SSL socket's own would run the TLS handshake here,
            # in the accept loop, for as long as the client cares to take.
            csock, caddr = socket.socket.accept(self.sock)
            if self.shutting_down:
                csock.close()
                return
            # Handshakes are small messages both ways: no waiting for the peer's ACK.
            with contextlib.suppress(OSError):
                csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            host = str(caddr[0])
            free = self.handshaker.free_workers()
            reason = self.admission.admit(host, free, pyro_config.THREADPOOL_SIZE)
            if reason is None:
                reason = self.handshaker.offer(csock, caddr)
                if reason is None:
                    return
                self.admission.release(host)
            self.admission.refusals.note(host, reason.split(". ")[0])
            if self.handshaker.sniff and self.handshaker.offer(csock, caddr, reason) is None:
                return  # told through TLS, when the client starts it
            self.refuser.refuse(csock, reason, tls or self.handshaker.sniff)

    def close(self) -> None:
        """Pyro5's close, and the refusing and handshake threads'."""
        handshaker = getattr(self, "handshaker", None)
        if handshaker is not None:
            handshaker.close()
        front = getattr(self, "front", None)
        if front is not None:
            front.close()
        super().close()
        refuser = getattr(self, "refuser", None)
        if refuser is not None:
            refuser.close()


class AdmissionDaemon:
    """Mixin for Pyro5 daemons: accept through ``GuardedThreadpoolServer`` (call
    ``guard_connections`` before ``requestLoop``)."""

    _pyroinst_admission: Admission | None = None
    #: Oneway calls run in the connection's worker (see ``pyroinst.daemon.install``).
    _pyroinst_inline_oneway = True

    def guard_connections(
        self,
        max_per_host: int,
        handshake_timeout: float,
        max_pending_handshakes: int = DEFAULT_MAX_PENDING_HANDSHAKES,
        tls: ssl.SSLContext | None = None,
    ) -> Admission:
        """Put the limits in place (the thread-pool server type only, Pyro5's default);
        ``tls``: the TLS context connections start (see ``GuardedThreadpoolServer.guard``)."""
        admission = Admission(max_per_host, handshake_timeout)
        server = self.transportServer  # type: ignore[attr-defined]
        if type(server) is svr_threads.SocketServer_Threadpool:
            server.__class__ = GuardedThreadpoolServer
            server.guard(admission, max_pending_handshakes, tls)
            self._pyroinst_admission = admission
        else:
            log.warning(
                "server type %r: connection limits and the handshake deadline apply only "
                "to Pyro5's thread-pool server",
                pyro_config.SERVERTYPE,
            )
        return admission

    def _housekeeping(self) -> None:
        super()._housekeeping()  # type: ignore[misc]
        admission = self._pyroinst_admission
        if admission is not None:
            admission.refusals.flush()
            admission.timeouts.flush()
        auth = getattr(self, "_pyroinst_auth", None)
        if auth is not None:
            auth.failures.summary.flush()

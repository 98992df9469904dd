"""The connections the handshake thread holds: buffered until proven, then a worker's.

``HandshakeConnection`` is what the daemon's own handshake code reads from and writes to
(a buffer the handshake thread fills and sends, until ``go_live``); ``PendingConnection``
is the handshake thread's record of one connection (its state, deadline, what is read
and what is left to send); ``ProvenJob`` is the worker's job once the handshake is done.
"""

from __future__ import annotations

from typing import Any

import Pyro5.errors
from Pyro5 import protocol, socketutil, svr_threads

__all__ = ["HEADER", "HandshakeConnection", "LiveConnection", "PendingConnection", "ProvenJob"]

HEADER = protocol._header_size


class HandshakeConnection(socketutil.SocketConnection):
    """A Pyro5 connection whose messages, during the handshake, come from a buffer the
    handshake thread filled and whose answers go to a buffer it sends; afterwards
    (``go_live``) an ordinary connection of the worker that serves it."""

    #: Connections of pyroinst's daemons: the marshal serializer is refused on them.
    _pyroinst_strict = True

    def __init__(self, sock: Any) -> None:
        super().__init__(sock)
        self._inbox = b""
        self._outbox: list[bytes] = []
        self._live = False

    def feed(self, data: bytes) -> None:
        """The complete next message, read by the handshake thread."""
        self._inbox = data

    def take_output(self) -> bytes:
        """What the daemon answered since the last call."""
        out, self._outbox = b"".join(self._outbox), []
        return out

    def go_live(self) -> None:
        """From now on read and write the socket (in the worker)."""
        self._live = True
        self._inbox = b""
        # Every later message goes straight to the socket: no check per send and receive.
        self.__class__ = LiveConnection

    def recv(self, size: int) -> bytes:  # noqa: D102 - SocketConnection's
        if self._live:
            return super().recv(size)
        if len(self._inbox) < size:
            raise Pyro5.errors.ConnectionClosedError("receiving: not enough data")
        data, self._inbox = self._inbox[:size], self._inbox[size:]
        return data

    def send(self, data: Any) -> None:  # noqa: D102 - SocketConnection's
        if self._live:
            super().send(data)
        else:
            self._outbox.append(bytes(data))


class LiveConnection(HandshakeConnection):
    """A proven connection: Pyro5's own send and receive (the handshake's buffers gone)."""

    recv = socketutil.SocketConnection.recv
    send = socketutil.SocketConnection.send


class PendingConnection:
    """One connection in its handshake."""

    __slots__ = (
        "sock",
        "addr",
        "host",
        "deadline",
        "state",
        "buf",
        "need",
        "accepted",
        "conn",
        "out",
        "then",
        "not_before",
        "events",
        "closed",
        "refusal",
    )

    def __init__(self, sock: Any, addr: Any, deadline: float, refusal: str | None = None) -> None:
        self.sock = sock
        self.addr = addr
        self.host = str(addr[0]) if isinstance(addr, tuple) and addr else "?"
        self.deadline = deadline
        self.state = "tls"
        self.buf = bytearray()
        self.need = HEADER
        self.accepted: tuple[int, ...] = (protocol.MSG_CONNECT,)
        self.conn = HandshakeConnection(sock)
        self.out = memoryview(b"")
        self.then = ""
        self.not_before = 0.0
        self.events = 0
        self.closed = False
        # Refused already (admission): only carried through TLS to hear the refusal.
        self.refusal = refusal


class ProvenJob(svr_threads.ClientConnectionJob):
    """A worker's job for a connection whose handshake is complete: serve its requests."""

    def __init__(self, conn: HandshakeConnection, addr: Any, daemon: Any, on_end: Any) -> None:
        self.csock = conn
        self.caddr = addr
        self.daemon = daemon
        self.on_end = on_end

    def handleConnection(self) -> bool:  # noqa: N802 - Pyro5's name
        return True  # done by the handshake thread

    def __call__(self) -> None:
        try:
            super().__call__()
        finally:
            self.on_end()

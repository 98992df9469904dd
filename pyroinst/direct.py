"""A waiting stream read answered by the thread that publishes the item (server side).

A reader of a job's stream or a device channel keeps a read waiting on the server (a long
poll, served by one of the server's threads). When an item is published, the plain way
is: the publishing thread wakes the serving thread, which then builds the answer and
sends it, and the reader's process wakes. For sparse items (a value every few ms, a
status change) that is two wake-ups on the server before the reader's, and on a machine
whose cores sleep between items each costs tens of microseconds. Here the publishing
thread sends the answer itself, and wakes the serving thread only after the send.

When (``pyroinst.buffers``): the read has waited at least ``DIRECT_AFTER`` (1 ms), its
batch is at most ``DIRECT_MAX_BYTES`` (32 KiB) and one ``publish`` answers at most
``DIRECT_PER_PUBLISH`` reads. A reader that keeps up with a fast stream is answered by
its serving thread as before, with everything that came meanwhile.

What stays as it was: the send never blocks the job (a non-blocking send; if the socket
takes nothing, the serving thread sends the answer; if it takes part, the serving thread
sends the rest before anything else goes on that connection), one answer per request in
request order (the serving thread does not read the connection's next request before the
answer is sent), the bytes are those the serving thread would send, and only plain TCP
connections served on pyroinst's short path (``pyroinst.dispatch``) are answered so: TLS
connections, compression and Pyro5's own request path keep the plain way.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import Any

from Pyro5 import config as pyro_config
from Pyro5 import protocol, serializers, socketutil
from Pyro5.callcontext import current_context

from .wire import HEADER
from .wire import local as _tls

__all__ = [
    "Answerer",
    "ANSWERED",
    "answerer",
    "DIRECT_AFTER",
    "DIRECT_MAX_BYTES",
    "DIRECT_PER_PUBLISH",
    "answered",
]

#: A waiting read is answered by the publishing thread once it has waited this long (s):
#: a reader that keeps up with a fast stream gets batches from its serving thread.
DIRECT_AFTER = 0.001
#: ...if the item is at most this large (on the wire)...
DIRECT_MAX_BYTES = 32 * 1024
#: ...and at most this many reads per publish (the job pays for each send).
DIRECT_PER_PUBLISH = 4

#: Reads answered by a publishing thread so far (in this process).
answered = 0

#: What a servant's read returns when its answer was already sent (``pyroinst.dispatch``
#: then sends nothing).
ANSWERED = object()

_RESULT = protocol.MSG_RESULT
_CORR_ID = protocol.FLAGS_CORR_ID
_VERSION = protocol.PROTOCOL_VERSION
_MAGIC = protocol._magic_number
_NO_CORR_ID = protocol._empty_correlation_id
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class Answerer:
    """The means to answer one waiting read from another thread: the request's
    connection, sequence number, serializer and correlation id, and ``finish`` (the
    servant's last touch to a buffer's answer)."""

    __slots__ = ("_conn", "_seq", "_serializer", "_corr", "_finish", "_rest", "sent")

    def __init__(
        self,
        conn: Any,
        seq: int,
        serializer: Any,
        corr: bytes | None,
        finish: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        self._conn = conn
        self._seq = seq
        self._serializer = serializer
        self._corr = corr
        self._finish = finish
        self._rest: memoryview | None = None
        #: True once the answer went (or its first part: ``send_rest`` sends the rest).
        self.sent = False

    def deliver(self, answer: dict[str, Any]) -> bool:
        """Send ``answer`` now if the socket takes it without waiting (the publishing
        thread); False: nothing was sent, the serving thread answers."""
        ctx = current_context
        kept = ctx.response_annotations
        ctx.response_annotations = {}
        try:
            payload = self._serializer.dumps(self._finish(answer))
            if ctx.response_annotations:
                return False  # an array out of band: the serving thread's message to make
        finally:
            ctx.response_annotations = kept
        corr = self._corr
        data = (
            HEADER.pack(
                b"PYRO",
                _VERSION,
                _RESULT,
                self._serializer.serializer_id,
                _CORR_ID if corr else 0,
                self._seq,
                len(payload),
                0,
                corr or _NO_CORR_ID,
                0,
                _MAGIC,
            )
            + payload
        )
        sock = self._conn.sock
        try:
            if sock.gettimeout() and not select.select((), (sock,), (), 0)[1]:
                # A socket with a timeout is polled before a send (CPython): only when it
                # has room, so that the poll returns at once.
                return False
            sent = sock.send(data, _DONTWAIT)
        except OSError:
            return False  # full, or broken: the serving thread's send meets it
        if sent < len(data):
            self._rest = memoryview(data)[sent:]
        self.sent = True
        global answered
        answered += 1
        return True

    def send_rest(self) -> None:
        """What ``deliver`` could not send at once (the serving thread, before it reads the
        connection's next request); errors as any answer's send raises them."""
        rest, self._rest = self._rest, None
        if rest is not None:
            socketutil.send_data(self._conn.sock, rest)


def answerer(finish: Callable[[dict[str, Any]], dict[str, Any]]) -> Answerer | None:
    """An Answerer for the plain call this thread serves (``finish`` makes the servant's
    answer of a buffer's), or None where its answer must be the serving thread's own."""
    conn = _tls.answering
    if conn is None or not _DONTWAIT:
        return None
    _tls.answering = None  # one per call
    if type(getattr(conn, "sock", None)) is not socket.socket or pyro_config.COMPRESSION:
        return None
    ctx = current_context
    corr = ctx.correlation_id
    return Answerer(
        conn,
        ctx.seq,
        serializers.serializers_by_id[ctx.serializer_id],
        corr.bytes if corr else None,
        finish,
    )

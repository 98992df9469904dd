"""Reads kept in flight: a stream's server sends the next batches without waiting.

A stream reads batch after batch over a connection of its own. One request per batch
would leave the link idle for a round trip between batches; instead a ``Pusher`` keeps
``window`` reads in flight on that connection. The first carries the stream's cursor, the
others the cursor ``CONTINUE`` ("where this connection's last read ended"); the server
answers a connection's requests in order, so as soon as one batch is sent the next
request is already there, and its batch follows at once. Each answer received sends one
more request, so ``window`` stays in flight.

What stays as it was: the server keeps no state beyond the cursor per connection, a
stalled reader costs the job nothing (at most ``window`` batches wait in the socket; the
buffer drops the rest and ``dropped`` counts exactly what this reader lost), every wait
is bounded by the stream's poll, and errors are the proxy's own (the call is an ordinary
proxy call: only its sending is extended). Any error ends the connection (requests in
flight cannot be taken back), and the next read starts again with the stream's cursor.
A server that does not know ``CONTINUE`` (older pyroinst) is read one batch per request.
"""

from __future__ import annotations

import logging
from typing import Any

from Pyro5 import config as pyro_config
from Pyro5 import protocol, serializers
from Pyro5.callcontext import current_context

from .buffers import CONTINUE

__all__ = ["Pusher", "DEFAULT_WINDOW", "MAX_WINDOW"]

log = logging.getLogger(__name__)

#: Reads a stream keeps in flight unless told otherwise (1: one request per batch).
DEFAULT_WINDOW = 2
#: The most a stream may keep in flight (each up to a batch of about 4 MiB).
MAX_WINDOW = 8


def check_window(window: Any) -> int:
    """``window`` as a whole number from 1 to MAX_WINDOW, or ValueError saying so."""
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
        raise ValueError(
            f"window must be a whole number from 1 (one request per batch) to {MAX_WINDOW}; "
            f"got {window!r}"
        )
    return window


class Pusher:
    """Keeps ``window`` reads of one stream in flight on its proxy's connection."""

    def __init__(self, window: int) -> None:
        self.window = check_window(window)
        self._conn: Any = None  # the connection the reads in flight were sent on
        self._ahead = 0  # reads sent beyond the one being answered

    @property
    def on(self) -> bool:
        """True while reads are kept in flight (False: one request per batch)."""
        return self.window > 1

    def read(self, proxy: Any, member: str, key: str, cursor: int, *rest: Any) -> Any:
        """``proxy.member(key, cursor, *rest)``, with the next reads sent along (``cursor``
        is the stream's: the first read on a connection starts there, the rest go on)."""
        conn = proxy._pyroConnection
        if conn is None or not self.on:
            # The first read (it connects) or pushing off: one request, one answer.
            self._forget(proxy)
            return getattr(proxy, member)(key, cursor, *rest)
        if conn is not self._conn:
            self._forget(proxy)  # a new connection: nothing in flight on it
            self._conn = conn
        plain_send = conn.send

        def send(data: Any) -> None:
            # The proxy's request for this read: already in flight unless none is.
            # In flight beyond this read afterwards: window - 1. Sent before: this read's
            # request and ahead - 1 after it (seq numbers are consecutive).
            seq, ahead = proxy._pyroSeq, self._ahead
            if ahead:
                start = ahead
            else:
                plain_send(data)
                start = 1
            for n in range(start, self.window):
                plain_send(self._request(proxy, conn, member, key, (seq + n) & 0xFFFF, rest))
            self._ahead = self.window - 1
            # Replies are on their way: the proxy must not take them for a closed
            # connection (pyroinst.proxy looks before each call; under TLS, looking reads).
            proxy._pyroinst_in_flight = self._ahead

        conn.send = send
        try:
            return getattr(proxy, member)(key, CONTINUE if self._ahead else cursor, *rest)
        except ValueError as exc:
            self.reset(proxy)
            if "-2" not in str(exc):
                raise
            # An older server: no reads in flight; this one again, as a plain read.
            log.info("%s: reading one batch per request (%s)", key, exc)
            self.window = 1
            return getattr(proxy, member)(key, cursor, *rest)
        except BaseException:
            self.reset(proxy)
            raise
        finally:
            if conn.__dict__.get("send") is send:
                del conn.send

    def reset(self, proxy: Any) -> None:
        """Forget the reads in flight and end their connection (its answers are stale)."""
        if self._ahead and proxy._pyroConnection is self._conn is not None:
            proxy._pyroRelease()
        self._forget(proxy)

    def _forget(self, proxy: Any) -> None:
        self._conn, self._ahead = None, 0
        proxy._pyroinst_in_flight = 0

    @staticmethod
    def _request(proxy: Any, conn: Any, member: str, key: str, seq: int, rest: tuple) -> Any:
        serializer = serializers.serializers[proxy._pyroSerializer or pyro_config.SERIALIZER]
        data = serializer.dumpsCall(conn.objectId, member, (key, CONTINUE, *rest), {})
        # The owner and lease annotations the proxy set for its own request.
        annotations = current_context.annotations
        msg = protocol.SendingMessage(
            protocol.MSG_INVOKE, 0, seq, serializer.serializer_id, data, annotations=annotations
        )
        return msg.data

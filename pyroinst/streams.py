"""Reading live data on the client: a job's stream and a device channel, as iterators.

``JobHandle.stream(start=0)`` and ``DeviceProxy.watch(channel, start="latest")`` return a
``Stream``. It reads with a cursor and a long poll (``job_stream`` / ``channel_read``), a
batch per call, over a connection of its own (so it can be read in another thread while
the device's proxy goes on being used), with the lab's token, TLS and fast array path.

* ``dropped`` counts the items this reader lost because the server's buffer overflowed
  before it read them; a warning is logged once per gap, and reading goes on with the
  oldest item still kept.
* A job's stream ends once the job has finished and every kept item was delivered. A job
  from before its server restarted ends the iteration with ``JobNotFound``.
* A channel never ends until ``close()``. When the device's server restarts, the stream
  connects again and reads the new run's items from its first one still kept; what the
  old run published while the reader was away is unknown, so ``gaps`` counts such
  restarts instead of adding to ``dropped``. A channel that exists only once something
  was published on it is waited for after a restart.
* Reads are kept in flight (``window``, default 2; see ``pyroinst.pushing``): the server
  sends the next batch as soon as one is out, so frames stream at close to wire speed.
  ``window=1`` reads one batch per request.
* Every read is bounded: the server waits at most ``POLL`` seconds, and its reply is due
  within ``POLL`` + ``SLACK``. A server that stops answering (a frozen PC) is retried
  until the device proxy's ``reconnect_timeout`` has passed since the last answer; then
  the iteration raises ``DeviceUnreachable`` naming the server.
* Any thread may read it, several at once (each item goes to one of them, in order).
* ``close()`` may be called from any thread, also while another thread reads: the
  reading thread's iteration then ends (StopIteration), and the connection is released.
  ``read()`` returns what one read brings (perhaps nothing) for callers that must stay
  responsive (a command line watching for Ctrl-C and its own deadline).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .errors import ChannelNotFound, ConnectionLost, DeviceUnreachable
from .pushing import DEFAULT_WINDOW, Pusher

__all__ = ["Stream", "POLL", "SLACK"]

log = logging.getLogger(__name__)

#: Seconds one read waits on the server for a first item.
POLL = 1.0
#: Seconds a read's reply may take beyond POLL.
SLACK = 1.0


class Stream:
    """Items of a job's stream or a device channel, in publish order, as they come.

    Iterate over it; ``close()`` (or leaving a ``with`` block) ends it early, from any
    thread. Attributes: ``dropped`` (items lost to overflow), ``gaps`` (server restarts of
    a channel: an unknown number of items missed), ``number`` (the item number of the item
    yielded last), ``cursor`` (the next item number to read).
    """

    def __init__(
        self,
        proxy: Any,
        member: str,
        key: str,
        start: int | str,
        label: str,
        pairs: bool = False,
        max_items: int = 1000,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if start == "latest":
            cursor = -1
        elif isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            cursor = start
        else:
            raise ValueError(f'start must be an item number (0 or more) or "latest", got {start!r}')
        self._pusher = Pusher(window)
        self._proxy = proxy
        # Each read is a wait the server makes: no reply in time means it stopped answering.
        proxy._pyroTimeout = POLL + SLACK
        self._reconnect = float(getattr(proxy, "_pyroinst_reconnect", 10.0))
        self._member = member
        self._key = key
        self._label = label
        self._pairs = pairs
        self._max_items = max_items
        self._batch: list[Any] = []
        self._index = 0
        self._done = False
        self._closed = False
        self._released = False
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # one reading thread at a time
        self._reader: int | None = None  # the thread reading now
        self._run: str | None = None
        self._last_answer = time.monotonic()
        self.cursor = cursor
        #: The item number (on the server) of the item yielded last.
        self.number = -1
        self._first_number = 0
        self.dropped = 0
        self.gaps = 0
        if hasattr(proxy, "_pyroinst_waiting"):
            proxy._pyroinst_waiting = True
        if cursor == -1:
            proxy._pyroClaimOwnership()
            self._pin_latest()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for item in stream``: read in pyroinst's thread pool (``pyroinst.aio``)."""
        from .aio import stream_items

        return stream_items(self)

    def __next__(self) -> Any:
        # Several threads may read one stream: each item goes to one of them, in order.
        with self._reading:
            while self._index >= len(self._batch):
                if self._done or self._closed:
                    self.close()
                    raise StopIteration
                self._read(self._fetch)
            return self._take()

    def read(self) -> list[Any] | None:
        """The items one read brings (waiting at most about POLL seconds; perhaps none),
        or None once the stream has ended or was closed. ``number`` is then the item number
        of the last item returned."""
        with self._reading:
            if self._index >= len(self._batch):
                if self._done or self._closed:
                    self.close()
                    return None
                self._read(self._fetch)
            items = []
            while self._index < len(self._batch):
                items.append(self._take())
            return items

    def _take(self) -> Any:
        item = self._batch[self._index]
        self.number = self._first_number + self._index
        self._index += 1
        return tuple(item) if self._pairs else item

    def _read(self, how: Any) -> None:
        """One read (``how``) by this thread, unless the stream was closed meanwhile."""
        with self._lock:
            if self._closed:
                return
            self._reader = threading.get_ident()
        try:
            self._proxy._pyroClaimOwnership()  # this stream may be read in another thread
            how()
        except (ConnectionLost, DeviceUnreachable) as exc:
            if not self._closed:
                self._unanswered(exc)
        except Exception:
            if not self._closed:
                raise  # closed meanwhile: whatever the cut connection raised ends nothing
        finally:
            with self._lock:
                self._reader = None
            if self._closed:
                self._release()

    def _unanswered(self, exc: Exception) -> None:
        """A read got no answer: retried (the proxy reconnects) until the device stayed
        away for its reconnect_timeout."""
        away = time.monotonic() - self._last_answer
        if away >= self._reconnect:
            raise DeviceUnreachable(
                f"{self._label}: its server stopped answering; nothing for {away:.1f} s "
                f"(reconnect_timeout {self._reconnect:g} s). Last error: {exc}",
                device=getattr(exc, "device", None),
                address=getattr(exc, "address", None),
            ) from None
        log.info("%s: no answer (%s); reading again", self._label, exc)

    def _pin_latest(self) -> None:
        """ "latest" means from now: ask the server where its end is now (no waiting)."""
        answer = getattr(self._proxy, self._member)(self._key, -1, 0.0, 1)
        self._last_answer = time.monotonic()
        self._run = answer.get("run")
        self.cursor = int(answer["cursor"])
        self._done = bool(answer["done"]) and not answer["items"]

    def _fetch(self) -> None:
        proxy = self._proxy
        try:
            answer = self._pusher.read(
                proxy, self._member, self._key, self.cursor, POLL, self._max_items
            )
        except ChannelNotFound:
            if not self._pairs or self._run is None:
                raise
            # Its server restarted and the channel is not there yet (made by its first
            # publish): wait for it, as for a server that is away.
            self._unanswered(ChannelNotFound(f"{self._label} is not there (yet)"))
            time.sleep(min(POLL, 0.25))  # a client-side retry interval, not synchronisation
            return
        self._last_answer = time.monotonic()
        run = answer.get("run")
        if self._run is not None and run is not None and run != self._run and self._pairs:
            self._run = run
            self._restarted()
            return
        self._run = run
        if answer["dropped"]:
            self.dropped += int(answer["dropped"])
            log.warning(
                "%s: %d item(s) were dropped by the server before this reader got them "
                "(its buffer was full); %d dropped so far",
                self._label,
                answer["dropped"],
                self.dropped,
            )
        self._batch = list(answer["items"])
        self._index = 0
        self.cursor = int(answer["cursor"])
        self._first_number = self.cursor - len(self._batch)
        self._done = bool(answer["done"])

    def _restarted(self) -> None:
        # Everything the new run published is new to this reader: read it from its first
        # item (what it published before this reader came back is read if still kept).
        self.gaps += 1
        self._batch, self._index, self.cursor = [], 0, 0
        log.warning(
            "%s: its server restarted; reading its new run from the start (what was "
            "published while it was away is unknown)",
            self._label,
        )

    def close(self) -> None:
        """Stop reading and release this stream's connection (from any thread)."""
        with self._lock:
            if self._closed and self._released:
                return
            self._closed = True
            reader = self._reader
        self._batch, self._index = [], 0
        if reader is not None and reader != threading.get_ident():
            # Another thread waits for a reply: wake it by ending the connection under
            # it; that thread then releases the proxy, which it owns.
            conn = self._proxy._pyroConnection
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
            return
        self._release()

    def _release(self) -> None:
        with self._lock:
            if self._released or self._reader is not None:
                return
            self._released = True
        self._proxy._pyroClaimOwnership()
        self._proxy._pyroRelease()

    def plot(self, title: str = "", **options: Any) -> Any:
        """A live plot of this stream in a notebook (extra ``pyroinst[notebook]``); it
        returns at once and updates while items come. See ``pyroinst.notebook``."""
        from .notebook import live_plot

        return live_plot(self, title or self._label, **options)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Stream {self._label} cursor={self.cursor} dropped={self.dropped}>"

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
  connects again (as a ``DeviceProxy`` does, raising ``DeviceUnreachable`` if the device
  stays away longer than its ``reconnect_timeout``) and goes on from the newest item; what
  was published meanwhile is unknown, so ``gaps`` counts such restarts instead of adding
  to ``dropped``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from .errors import ConnectionLost

__all__ = ["Stream", "POLL"]

log = logging.getLogger(__name__)

#: Seconds one read waits on the server for a first item.
POLL = 1.0


class Stream:
    """Items of a job's stream or a device channel, in publish order, as they come.

    Iterate over it; ``close()`` (or leaving a ``with`` block) ends it early. Attributes:
    ``dropped`` (items lost to overflow), ``gaps`` (server restarts of a channel: an
    unknown number of items missed), ``number`` (the item number of the item yielded
    last), ``cursor`` (the next item number to read).
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
    ) -> None:
        if start == "latest":
            cursor = -1
        elif isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            cursor = start
        else:
            raise ValueError(f'start must be an item number (0 or more) or "latest", got {start!r}')
        self._proxy = proxy
        self._member = member
        self._key = key
        self._label = label
        self._pairs = pairs
        self._max_items = max_items
        self._batch: list[Any] = []
        self._index = 0
        self._done = False
        self._closed = False
        self._run: str | None = None
        self.cursor = cursor
        #: The item number (on the server) of the item yielded last.
        self.number = -1
        self._first_number = 0
        self.dropped = 0
        self.gaps = 0
        if cursor == -1:
            self._pin_latest()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        while self._index >= len(self._batch):
            if self._done or self._closed:
                self.close()
                raise StopIteration
            self._fetch()
        item = self._batch[self._index]
        self.number = self._first_number + self._index
        self._index += 1
        return tuple(item) if self._pairs else item

    def _pin_latest(self) -> None:
        """ "latest" means from now: ask the server where its end is now (no waiting)."""
        self._proxy._pyroClaimOwnership()
        answer = getattr(self._proxy, self._member)(self._key, -1, 0.0, 1)
        self._run = answer.get("run")
        self.cursor = int(answer["cursor"])
        self._done = bool(answer["done"]) and not answer["items"]

    def _fetch(self) -> None:
        proxy = self._proxy
        proxy._pyroClaimOwnership()  # this stream may be read in another thread
        try:
            answer = getattr(proxy, self._member)(self._key, self.cursor, POLL, self._max_items)
        except ConnectionLost:
            # A read changes nothing on the server: read again (the proxy reconnects, and
            # a new run of the server is noticed below).
            return
        run = answer.get("run")
        if self._run is not None and run is not None and run != self._run and self._pairs:
            self._run = run
            self._restarted("its server restarted")
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

    def _restarted(self, why: str) -> None:
        self.gaps += 1
        self._batch, self._index = [], 0
        self._pin_latest()  # the newest from now on; what was missed is unknown
        log.warning(
            "%s: %s; going on from the newest item (items meanwhile unknown)", self._label, why
        )

    def close(self) -> None:
        """Stop reading and release this stream's connection."""
        if not self._closed:
            self._closed = True
            self._batch, self._index = [], 0
            self._proxy._pyroClaimOwnership()
            self._proxy._pyroRelease()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Stream {self._label} cursor={self.cursor} dropped={self.dropped}>"

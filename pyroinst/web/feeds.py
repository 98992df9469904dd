"""Event streams of jobs and channels, read once from the device and fanned out.

However many browsers watch a job or a channel, the web server reads it once: one
``Feed`` per job or channel, with one reader (one connection to the device server, from
``ProxyPool.hold``) that keeps the newest ``KEPT`` events; every Server-Sent Events
client of it reads from there. The reader starts with the first client and stops, giving
its connection back, as soon as the last one leaves.

A job's events: ``status`` whenever its state, progress or message changes (checked at
most ``STATUS_RATE`` times a second; a client joining gets the latest at once), ``item``
for each item it publishes (``{"index", "value"}``, arrays anywhere in it summarised;
``GET .../items/{index}`` fetches one whole), and a final ``end`` with the last status. A
channel's events: ``item`` for each ``(timestamp, value)`` from now on. Every ``item``
event's ``id`` is the index after it, so a browser's EventSource that reconnects (sending
``Last-Event-ID``) resumes where it was; items no longer kept are reported as ``{"dropped":
n}`` in a ``gap`` event. A reader that fails (the job is gone, the device stopped
answering) sends an ``error`` event (``{error, message}``) and ends the stream.

One client (a browser session, else an address) may hold at most ``max_streams`` streams
at once (16); more get ``TooManyStreams`` (429). Idle streams send a comment every
``KEEPALIVE`` seconds, so a client that left is noticed even when nothing happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.requests import Request

from ..errors import PyroinstError
from .values import summary

__all__ = ["Feeds", "Feed", "TooManyStreams", "sse", "MAX_STREAMS"]

log = logging.getLogger(__name__)

_FINAL = ("done", "failed", "cancelled")
#: The most status events a second.
STATUS_RATE = 20
#: Seconds one read waits for items.
POLL = 0.5
#: Items read at once.
BATCH = 200
#: Item events a feed keeps for clients that join or fall behind.
KEPT = 2000
#: Streams one client may hold at once.
MAX_STREAMS = 16
#: Seconds between keep-alive comments of an idle stream.
KEEPALIVE = 10.0


class TooManyStreams(PyroinstError):
    """A client holds as many event streams as it may (``max_streams``)."""


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One Server-Sent Event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Feed:
    """One job's or channel's events, read once (``reader``) for every client."""

    def __init__(self, key: tuple[str, str, str], reader: Callable[[Feed], Any]) -> None:
        self.key = key
        self.items: deque[tuple[int, str]] = deque(maxlen=KEPT)
        self.next_index = 0  # the index after the newest item seen
        self.status: str | None = None
        self.final: str | None = None  # the end (or error) event, once there is one
        self.clients = 0
        self.started_at: int | None = None  # the first index the reader asked for
        # Readers stop between two calls, never in one: a call runs in a worker thread,
        # and its connection must not go back to the pool while that thread still uses it.
        self.stopping = False
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(reader(self))

    def changed(self) -> asyncio.Event:
        """An event set at the next change (take it before looking at the feed)."""
        return self._changed

    def notify(self) -> None:
        """Wake every client: something changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    def add(self, index: int, event: str) -> None:
        """Keep item ``index``'s event."""
        self.items.append((index, event))
        self.next_index = index + 1

    def since(self, cursor: int) -> tuple[int, list[tuple[int, str]]]:
        """(items missed because they are no longer kept, the kept items from ``cursor``)."""
        if not self.items:
            return 0, []
        oldest = self.items[0][0]
        dropped = max(0, oldest - cursor) if cursor < oldest else 0
        return dropped, [(i, e) for i, e in self.items if i >= cursor]

    def finish(self, event: str) -> None:
        """The stream's last event (``end`` or ``error``)."""
        if self.final is None:
            self.final = event
        self.notify()

    def stop(self) -> None:
        """Let the reader stop after its current call (at most ``POLL`` seconds and a
        reply away); it gives its connection back then."""
        self.stopping = True

    async def stopped(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the reader to end."""
        self.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout)


class Feeds:
    """Every open feed, and how many streams each client holds."""

    def __init__(self, pool: Any, limiter: anyio.CapacityLimiter, max_streams: int = MAX_STREAMS):
        self.pool = pool
        self.limiter = limiter
        self.max_streams = max_streams
        self._feeds: dict[tuple[str, str, str], Feed] = {}
        self._streams: dict[str, int] = {}

    def open_feeds(self) -> int:
        """Feeds with a reader now."""
        return len(self._feeds)

    def _reader(self, kind: str, device: str, target: str) -> Callable[[Feed], Any]:
        if kind == "job":
            return lambda feed: self._read_job(feed, device, target)
        return lambda feed: self._read_channel(feed, device, target)

    async def stream(
        self, request: Request, client: str, kind: str, device: str, target: str
    ) -> tuple[AsyncIterator[str], Callable[[], Any]]:
        """A client's event stream of a job or channel, and what ends it (call it when the
        response ends, however it ends). TooManyStreams past ``max_streams``."""
        held = self._streams.get(client, 0)
        if held >= self.max_streams:
            raise TooManyStreams(
                f"this client already has {held} event streams open, the most it may "
                f"(max_streams {self.max_streams}): close some views or tabs"
            )
        self._streams[client] = held + 1
        key = (kind, device, target)
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = Feed(key, self._reader(kind, device, target))
        feed.clients += 1
        done = False

        async def end() -> None:
            nonlocal done
            if done:
                return
            done = True
            self._streams[client] = self._streams.get(client, 1) - 1
            if self._streams[client] <= 0:
                self._streams.pop(client, None)
            feed.clients -= 1
            if feed.clients <= 0 and self._feeds.get(key) is feed:
                del self._feeds[key]
                feed.stop()

        cursor = _resume(request)
        if cursor is None:
            cursor = 0 if kind == "job" else None
        return self._events(request, feed, cursor), end

    async def _events(self, request: Request, feed: Feed, cursor: int | None) -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        if cursor is None:  # a channel from now on
            cursor = feed.next_index if feed.started_at is not None else -1
        sent_status = None
        quiet_since = time.monotonic()
        while True:
            changed = feed.changed()
            if feed.status is not None and feed.status is not sent_status:
                sent_status = feed.status
                yield feed.status
            if cursor < 0 and feed.started_at is not None:
                cursor = feed.started_at if feed.started_at >= 0 else feed.next_index
            if cursor >= 0:
                dropped, items = feed.since(cursor)
                if dropped:
                    yield sse("gap", {"dropped": dropped})
                for index, event in items:
                    yield event
                    cursor = index + 1
                    quiet_since = time.monotonic()
            if feed.final is not None and cursor >= feed.next_index:
                yield feed.final
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), POLL)
            if await request.is_disconnected():
                return
            if time.monotonic() - quiet_since > KEEPALIVE:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"  # a client that left fails this write

    # -- readers ---------------------------------------------------------------------------
    async def _call(self, proxy: Any, fn: Callable[[Any], Any]) -> Any:
        def run() -> Any:
            proxy._pyroClaimOwnership()
            return fn(proxy)

        return await anyio.to_thread.run_sync(run, limiter=self.limiter)

    async def _with_proxy(self, feed: Feed, device: str, body: Callable[[Any], Any]) -> None:
        proxy = None
        try:
            proxy = await anyio.to_thread.run_sync(self.pool.hold, device, limiter=self.limiter)
            await body(proxy)
        except Exception as exc:  # noqa: BLE001 - told to the clients, then the stream ends
            feed.finish(sse("error", {"error": type(exc).__name__, "message": str(exc)}))
        finally:
            if proxy is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.pool.give_back, proxy)

    async def _read_job(self, feed: Feed, device: str, job_id: str) -> None:
        async def body(proxy: Any) -> None:
            cursor, last, next_status = 0, None, 0.0
            feed.started_at = 0
            while not feed.stopping:
                now = time.monotonic()
                if now >= next_status:
                    status = await self._call(proxy, lambda p: p.job_status(job_id))
                    next_status = now + 1.0 / STATUS_RATE
                    key = (status["state"], status["progress"], status["message"])
                    if key != last:
                        last = key
                        feed.status = sse("status", status)
                        feed.notify()
                finished = last is not None and last[0] in _FINAL
                wait = 0.0 if finished else max(0.0, next_status - time.monotonic())
                answer = await self._call(
                    proxy, lambda p, c=cursor, w=wait: p.job_stream(job_id, c, w, BATCH)
                )
                first = answer["cursor"] - len(answer["items"])
                for offset, value in enumerate(answer["items"]):
                    index = first + offset
                    feed.add(
                        index, sse("item", {"index": index, "value": summary(value)}, index + 1)
                    )
                if answer["items"]:
                    feed.notify()
                cursor = answer["cursor"]
                if answer.get("done") and finished and not answer["items"]:
                    status = await self._call(proxy, lambda p: p.job_status(job_id))
                    feed.finish(sse("end", status))
                    return

        await self._with_proxy(feed, device, body)

    async def _read_channel(self, feed: Feed, device: str, channel: str) -> None:
        async def body(proxy: Any) -> None:
            cursor, run = -1, None
            while not feed.stopping:
                answer = await self._call(
                    proxy, lambda p, c=cursor: p.channel_read(channel, c, POLL, BATCH)
                )
                if run is not None and answer.get("run") != run:
                    feed.status = sse("restart", {"run": answer.get("run")})  # server restarted
                run = answer.get("run")
                first = answer["cursor"] - len(answer["items"])
                if feed.started_at is None:
                    feed.started_at = first
                    feed.next_index = first
                for offset, (stamp, value) in enumerate(answer["items"]):
                    index = first + offset
                    event = sse(
                        "item", {"index": index, "time": stamp, "value": summary(value)}, index + 1
                    )
                    feed.add(index, event)
                feed.notify()
                cursor = answer["cursor"]

        await self._with_proxy(feed, device, body)

    async def close(self) -> None:
        """Stop every reader."""
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            feed.stop()
        for feed in feeds:
            await feed.stopped(POLL + 2.0)


def _resume(request: Request) -> int | None:
    last = request.headers.get("last-event-id", "")
    return int(last) if last.isdigit() else None

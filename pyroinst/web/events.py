"""Server-Sent Events of jobs and channels.

A job's events: ``status`` whenever its state, progress or message changes (checked at
most ``STATUS_RATE`` times a second), ``item`` for each item it publishes (``{"index",
"value"}``, arrays summarised; ``GET .../items/{index}`` fetches one whole), and a final
``end`` with the last status. A channel's events: ``item`` for each ``(timestamp,
value)``. Every ``item`` event's ``id`` is the index after it, so a browser's
EventSource that reconnects (sending ``Last-Event-ID``) resumes where it was; items lost
meanwhile are reported as ``{"dropped": n}`` in a ``gap`` event.

Each stream has a proxy (a connection to the device server) of its own, moved to
whichever worker thread does the next read (``Remote``). Each read is a long poll of at
most ``POLL`` seconds, and the client is checked for having gone away between reads;
then the proxy is released: a disconnected client costs nothing after that, on the web
server or the device server.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.requests import Request

from .values import summary

__all__ = ["job_events", "channel_events", "sse", "Remote"]

_FINAL = ("done", "failed", "cancelled")

#: The most status events a second.
STATUS_RATE = 20
#: Seconds one read waits for items.
POLL = 0.25
#: Items read at once.
BATCH = 200


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One Server-Sent Event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Remote:
    """One proxy, used from worker threads one call at a time (``call``), then closed."""

    def __init__(self, open_proxy: Callable[[], Any], limiter: anyio.CapacityLimiter) -> None:
        self._open = open_proxy
        self._proxy: Any = None
        self._limiter = limiter

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        if self._proxy is None:
            self._proxy = self._open()
        self._proxy._pyroClaimOwnership()  # Pyro5 proxies belong to one thread at a time
        return fn(self._proxy)

    async def call(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(proxy)`` in a worker thread."""
        return await anyio.to_thread.run_sync(self._run, fn, limiter=self._limiter)

    async def close(self) -> None:
        """Release the proxy's connection (also when the stream was cancelled: a client
        that went away)."""
        if self._proxy is not None:
            proxy, self._proxy = self._proxy, None

            def release() -> None:
                proxy._pyroClaimOwnership()
                proxy._pyroRelease()

            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(release, limiter=self._limiter)


def _resume(request: Request, default: int) -> int:
    last = request.headers.get("last-event-id", "")
    return int(last) if last.isdigit() else default


async def job_events(request: Request, remote: Remote, job_id: str) -> AsyncIterator[str]:
    """The events of a job (see the module docstring)."""
    cursor = _resume(request, 0)
    last_status: tuple | None = None
    next_status = 0.0
    try:
        yield "retry: 1000\n\n"
        while not await request.is_disconnected():
            now = time.monotonic()
            if now >= next_status:
                status = await remote.call(lambda p: p.job_status(job_id))
                next_status = now + 1.0 / STATUS_RATE
                key = (status["state"], status["progress"], status["message"])
                if key != last_status:
                    last_status = key
                    yield sse("status", status)
            finished = last_status is not None and last_status[0] in _FINAL
            wait = 0 if finished else max(0.0, next_status - time.monotonic())
            answer = await remote.call(
                lambda p, c=cursor, w=wait: p.job_stream(job_id, c, w, BATCH)
            )
            if answer.get("dropped"):
                yield sse("gap", {"dropped": answer["dropped"]})
            first = answer["cursor"] - len(answer["items"])
            for offset, value in enumerate(answer["items"]):
                index = first + offset
                yield sse("item", {"index": index, "value": summary(value)}, index + 1)
            cursor = answer["cursor"]
            if answer.get("done") and finished and not answer["items"]:
                yield sse("end", await remote.call(lambda p: p.job_status(job_id)))
                return
    finally:
        await remote.close()


async def channel_events(request: Request, remote: Remote, channel: str) -> AsyncIterator[str]:
    """The items of a device channel from now on (or from ``Last-Event-ID``)."""
    cursor = _resume(request, -1)
    run = None
    try:
        yield "retry: 1000\n\n"
        while not await request.is_disconnected():
            answer = await remote.call(lambda p, c=cursor: p.channel_read(channel, c, POLL, BATCH))
            if run is not None and answer.get("run") != run:
                yield sse("restart", {"run": answer.get("run")})  # its server restarted
            run = answer.get("run")
            if answer.get("dropped"):
                yield sse("gap", {"dropped": answer["dropped"]})
            first = answer["cursor"] - len(answer["items"])
            for offset, (stamp, value) in enumerate(answer["items"]):
                index = first + offset
                yield sse(
                    "item", {"index": index, "time": stamp, "value": summary(value)}, index + 1
                )
            cursor = answer["cursor"]
    finally:
        await remote.close()

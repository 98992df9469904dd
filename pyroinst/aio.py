"""asyncio: devices, jobs and streams awaited from a running event loop (Jupyter's too).

Built on the synchronous client, so there is one implementation of every call, timeout
and error: each blocking step runs in a bounded pool of threads (``PYROINST_AIO_THREADS``,
default ``AIO_THREADS``), over those threads' own connections (see ``DeviceProxy``). A
hundred concurrent awaits share that pool; none blocks the event loop.

* ``dev = await pyroinst.aio.connect("dmm")``: an ``AsyncDeviceProxy``. Its methods are
  coroutines (``await dev.idn()``); a job method gives a ``JobHandle``; properties are read
  with ``await dev.get("gain")`` and set with ``await dev.set("gain", 2.0)``;
  ``dev.sync`` is the thread-free ``DeviceProxy`` under it.
* ``await job`` is the job's result; ``await job.wait_async(timeout)`` is True once it
  finished (``job.wait()`` stays synchronous and returns a bool).
* ``async for item in job.stream()`` and ``async for t, v in dev.watch("temperature")``.

Waits are made of slices of at most ``WAIT_SLICE`` seconds, so a waiting task holds a
pool thread for at most a slice at a time, and long waits do not starve other calls.

Cancelling an awaiting task (``task.cancel()``, ``asyncio.timeout``) stops the waiting,
never the work on the device: a call already sent runs to its end there (its reply is
dropped), and a job runs on until ``await job.cancel_async()`` or ``job.cancel()``.
A stream whose reading task was cancelled may lose the one batch being read then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .handles import JobHandle
    from .proxy import DeviceProxy
    from .streams import Stream

__all__ = ["AIO_THREADS", "WAIT_SLICE", "AsyncDeviceProxy", "AsyncStream", "connect", "run"]

#: Default size of the thread pool the awaited calls run in.
AIO_THREADS = 16
#: Longest single wait (seconds) an awaited job wait makes in a pool thread.
WAIT_SLICE = 1.0

T = TypeVar("T")

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> int:
    text = os.environ.get("PYROINST_AIO_THREADS", "")
    try:
        value = int(text) if text else AIO_THREADS
    except ValueError:
        from .errors import ConfigurationError

        raise ConfigurationError(
            f"PYROINST_AIO_THREADS must be a whole number of threads, got {text!r}"
        ) from None
    if value < 1:
        from .errors import ConfigurationError

        raise ConfigurationError(f"PYROINST_AIO_THREADS must be 1 or more, got {value}")
    return value


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=_threads(), thread_name_prefix="pyroinst-aio"
            )
        return _pool


async def run(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` in pyroinst's bounded thread pool, awaited."""
    loop = asyncio.get_running_loop()
    call = functools.partial(func, *args, **kwargs) if kwargs else func
    return await loop.run_in_executor(_executor(), call, *(() if kwargs else args))


async def wait(handle: JobHandle, timeout: float | None = None) -> bool:
    """True once ``handle``'s job has finished, False after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = WAIT_SLICE if deadline is None else max(0.0, deadline - time.monotonic())
        if await run(handle.wait, min(WAIT_SLICE, left)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


async def result(handle: JobHandle, timeout: float | None = None) -> Any:
    """The job's result (its error raised), waiting at most ``timeout`` seconds."""
    from .errors import JobTimeout

    if not await wait(handle, timeout):
        raise JobTimeout(
            f"job {handle.id} on device '{handle.device}' has not finished after {timeout:g} s",
            job_id=handle.id,
        )
    return await run(handle.result, 0)


class AsyncStream:
    """A ``Stream`` read with ``async for`` (made in a pool thread on first use)."""

    def __init__(self, make: Callable[[], Stream]) -> None:
        self._make = make
        self._stream: Stream | None = None
        self._items: deque[Any] = deque()
        self._closed = False

    @property
    def stream(self) -> Stream | None:
        """The synchronous ``Stream`` (None until the first item was asked for)."""
        return self._stream

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            if self._stream is None:
                self._stream = await run(self._make)
            batch = await run(self._stream.read)
            if batch is None:
                raise StopAsyncIteration
            self._items.extend(batch)
        return self._items.popleft()

    async def aclose(self) -> None:
        """Stop reading and release the stream's connection."""
        self._closed = True
        if self._stream is not None:
            await run(self._stream.close)

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def stream_items(stream: Stream) -> AsyncIterator[Any]:
    """The items of ``stream``, awaited batch by batch."""
    async with AsyncStream(lambda: stream) as items:
        async for item in items:
            yield item


class _AsyncMethod:
    """A device method as a coroutine function (its help is the driver's)."""

    def __init__(self, method: Any) -> None:
        self._method = method
        self.__name__ = method.__dict__.get("__name__", "method")

    # Looked up only when help is asked for (a describe() call, once per proxy).
    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self._method.__doc__  # type: ignore[no-any-return]

    @property
    def __signature__(self) -> Any:
        return self._method.__signature__

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await run(self._method, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<awaitable {self._method!r}>"


class AsyncDeviceProxy:
    """A device for asyncio code: every method a coroutine; see ``pyroinst.aio``."""

    def __init__(self, proxy: DeviceProxy) -> None:
        self.sync = proxy

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        sync = self.sync
        if name in sync._pyroAttrs:
            raise AttributeError(
                f"{name!r} is a property of the device: use await dev.get({name!r}) "
                f"or await dev.set({name!r}, value)"
            )
        return _AsyncMethod(getattr(sync, name))

    async def get(self, name: str) -> Any:
        """The value of the device property ``name``."""
        return await run(getattr, self.sync, name)

    async def set(self, name: str, value: Any) -> None:
        """Set the device property ``name`` to ``value``."""
        await run(setattr, self.sync, name, value)

    def watch(
        self, channel: str, start: int | str = "latest", max_items: int = 1000
    ) -> AsyncStream:
        """``async for t, value in dev.watch(channel)``: see ``DeviceProxy.watch``."""
        sync = self.sync
        return AsyncStream(lambda: sync.watch(channel, start, max_items))

    async def close(self) -> None:
        """Close every connection of the proxy (calls afterwards connect again)."""
        await run(self.sync._pyroinst_release_all)

    async def __aenter__(self) -> AsyncDeviceProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.sync._pyroMethods))

    def __repr__(self) -> str:
        return "<Async" + repr(self.sync)[1:]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's display: the device's methods (see ``DeviceProxy``)."""
        self.sync._repr_pretty_(printer, cycle)


async def connect(
    name: str,
    ns_host: str | None = None,
    ns_port: int | None = None,
    timeout: float | None = None,
    **options: Any,
) -> AsyncDeviceProxy:
    """``await pyroinst.aio.connect(name)``: the device ``name`` for asyncio code.

    Takes the arguments of ``pyroinst.connect``; the name is looked up and the device's
    methods learnt in a pool thread, so the event loop never waits on the network.
    """
    from .client import connect as connect_sync

    def made() -> DeviceProxy:
        proxy = connect_sync(name, ns_host, ns_port, timeout, **options)
        proxy._pyroinst_connect(
            None if proxy._pyroTimeout is None else time.monotonic() + proxy._pyroTimeout
        )
        return proxy

    return AsyncDeviceProxy(await run(made))

"""pyroinst.aio: awaited devices, jobs and streams, on a real lab."""

from __future__ import annotations

import asyncio
import inspect
import time

import numpy as np
import pytest

import pyroinst
import pyroinst.aio
from tests.helpers import wait_until


class Sensor:
    """A device for asyncio code: plain calls, a job, a fast channel."""

    def __init__(self) -> None:
        self.finished: list[int] = []
        self.level = 1.0

    @pyroinst.concurrent
    def twice(self, value: float, seconds: float = 0.0) -> float:
        """``2 * value`` after ``seconds``; records that it ran to its end."""
        time.sleep(seconds)
        self.finished.append(int(value))
        return 2 * value

    @pyroinst.job
    def sweep(self, n: int, seconds: float = 0.0) -> np.ndarray:
        """Publishes ``n`` points, one each ``seconds / n``; returns them all."""
        ctx = pyroinst.current_job()
        for i in range(n):
            ctx.publish(float(i))
            ctx.set_progress((i + 1) / n)
            if seconds:
                ctx.sleep(seconds / n)
        return np.arange(n, dtype=float)

    @pyroinst.monitor(period=0.02)
    def reading(self) -> float:
        """A fast channel."""
        return self.level

    @property
    def gain(self) -> float:
        """A settable property."""
        return self.level

    @gain.setter
    def gain(self, value: float) -> None:
        self.level = float(value)


@pytest.fixture(scope="module")
def lab():
    ns = pyroinst.EmbeddedNameServer("127.0.0.1", 0).start()
    sensor = Sensor()
    server = pyroinst.InstServer(host="127.0.0.1", port=0, ns_host=ns.host, ns_port=ns.port)
    server.add_device(sensor, "s1")
    server.add_device(Sensor(), "s2")
    server.start()
    yield ns, server, sensor
    server.stop()
    ns.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_await_a_job_and_read_its_stream(lab):
    ns = lab[0]

    async def main():
        dev = await pyroinst.aio.connect("s1", ns.host, ns.port)
        assert await dev.twice(2.5) == 5.0
        job = await dev.sweep(50)
        assert isinstance(job, pyroinst.JobHandle)
        items = [item async for item in job.stream()]
        result = await job
        assert await job.wait_async(5) is True
        await dev.close()
        return items, result

    items, result = run(main())
    assert items == [float(i) for i in range(50)]
    assert np.array_equal(result, np.arange(50.0))


def test_a_sync_proxy_job_awaited(lab):
    ns = lab[0]
    dev = pyroinst.connect("s1", ns.host, ns.port)
    job = dev.sweep(5)

    async def main():
        return await job, await job.result_async(5), (await job.status_async())["state"]

    result, again, state = run(main())
    assert np.array_equal(result, np.arange(5.0)) and np.array_equal(again, result)
    assert state == "done"
    pyroinst.disconnect(dev)


def test_async_for_over_a_watch_and_properties(lab):
    ns, _, sensor = lab

    async def main():
        async with await pyroinst.aio.connect("s1", ns.host, ns.port) as dev:
            await dev.set("gain", 3.0)
            assert await dev.get("gain") == 3.0
            seen = []
            async for when, value in dev.watch("reading"):
                seen.append((when, value))
                if len(seen) == 3:
                    break
            return seen

    seen = run(main())
    assert len(seen) == 3 and all(value == 3.0 for _, value in seen)
    assert seen[0][0] <= seen[1][0] <= seen[2][0]
    sensor.level = 1.0


def test_a_hundred_concurrent_awaited_calls(lab):
    ns = lab[0]

    async def main():
        devs = [await pyroinst.aio.connect(name, ns.host, ns.port) for name in ("s1", "s2")]
        calls = [devs[i % 2].twice(i, 0.01) for i in range(100)]
        answers = await asyncio.gather(*calls)
        opened = [d.sync._pyroinst_conns.open_connections() for d in devs]
        for d in devs:
            await d.close()
        return answers, opened

    answers, opened = run(main())
    assert answers == [2.0 * i for i in range(100)]
    # Bounded by the pool, not by the number of calls.
    assert all(n <= pyroinst.aio.AIO_THREADS for n in opened), opened


def test_the_event_loop_is_never_blocked(lab):
    ns = lab[0]

    async def main():
        dev = await pyroinst.aio.connect("s1", ns.host, ns.port)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.create_task(ticker())
        await dev.twice(1, 0.5)  # half a second in the device
        tick.cancel()
        await dev.close()
        return ticks

    assert run(main()) >= 10  # the loop kept running while the call waited


def test_cancelling_the_awaiting_task_cancels_nothing_on_the_device(lab):
    ns, _, sensor = lab

    async def main():
        dev = await pyroinst.aio.connect("s1", ns.host, ns.port)
        job = await dev.sweep(1000, 20.0)
        waiting = asyncio.create_task(job.wait_async())
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        still = (await job.status_async())["state"]
        # A call already sent runs to its end even though its awaiting task is gone.
        call = asyncio.create_task(dev.twice(4242, 0.3))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await job.cancel_async() is True  # cancelling the job is asked for
        with pytest.raises(pyroinst.JobCancelled):
            await job
        await dev.close()
        return still

    assert run(main()) == "running"
    wait_until(lambda: 4242 in sensor.finished, timeout=10)


def test_wait_async_times_out_and_a_job_error_is_raised(lab):
    ns = lab[0]

    async def main():
        dev = await pyroinst.aio.connect("s1", ns.host, ns.port)
        job = await dev.sweep(1000, 5.0)
        assert await job.wait_async(0.2) is False
        with pytest.raises(pyroinst.JobTimeout):
            await job.result_async(0.2)
        await job.cancel_async()
        with pytest.raises(pyroinst.SignatureError):
            await dev.twice()  # a bad call: the error arrives as it would without asyncio
        await dev.close()

    run(main())


def test_async_methods_carry_the_drivers_help(lab):
    ns = lab[0]

    async def main():
        dev = await pyroinst.aio.connect("s1", ns.host, ns.port)
        method = dev.twice
        await dev.close()
        return method

    method = run(main())
    assert "2 * value" in method.__doc__
    assert str(inspect.signature(method)) == "(value: float, seconds: float = 0.0) -> float"


def test_the_pool_is_bounded_by_a_setting(monkeypatch):
    monkeypatch.setenv("PYROINST_AIO_THREADS", "zero")
    with pytest.raises(pyroinst.ConfigurationError, match="PYROINST_AIO_THREADS"):
        pyroinst.aio._threads()
    monkeypatch.setenv("PYROINST_AIO_THREADS", "3")
    assert pyroinst.aio._threads() == 3

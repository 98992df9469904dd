"""A small typed client."""

from __future__ import annotations

import asyncio

import numpy as np

import pyroinst
import pyroinst.aio


def main() -> float:
    dev: pyroinst.DeviceProxy = pyroinst.connect("dmm", "127.0.0.1", 9090, timeout=10.0)
    job: pyroinst.JobHandle = dev.measure(100)
    for item in job.stream():
        print(item)
    stream: pyroinst.Stream = dev.watch("temperature")
    stream.close()
    done: bool = job.wait(5.0)
    status: dict[str, object] = job.status()
    data = np.asarray(job.result(timeout=5.0))
    pyroinst.disconnect(dev)
    print(done, status)
    return float(data.sum())


async def amain() -> None:
    dev = await pyroinst.aio.connect("dmm", "127.0.0.1", 9090)
    job: pyroinst.JobHandle = await dev.measure(100)
    async for item in job.stream():
        print(item)
    result = await job
    finished: bool = await job.wait_async(1.0)
    print(result, finished)
    await dev.close()


if __name__ == "__main__":
    main()
    asyncio.run(amain())

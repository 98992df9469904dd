"""Live-data workloads (W7-W10), each run in a fresh client process by bench.py.

``python -m bench.live NS_HOST NS_PORT WORKLOAD ARGS...`` prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from typing import Any

import pyroinst

MIB = 1 << 20
#: Seconds between frames of the W7 job that four readers follow: a 100 Hz camera.
PAUSE = 0.01


def _device(ns: tuple[str, int], name: str) -> pyroinst.DeviceProxy:
    dev = pyroinst.connect(name, *ns)
    dev.ping()
    return dev


def w7_frames(ns: tuple[str, int], count: int, readers: int) -> dict[str, Any]:
    """A job publishing ``count`` 1 MiB frames, read by ``readers`` readers at once.

    One reader: the job publishes as fast as it can, and the reader's throughput (bytes
    from the job's start until its stream ended) is the figure. Four readers (or 0, the
    baseline): the job publishes at a camera's pace (``PAUSE`` apart), and its own wall
    time is the figure.
    """
    points = MIB // 8
    dev = _device(ns, "stream")
    if readers == 0:
        job = dev.frames(count, points, PAUSE)
        return {"job_wall": job.result(timeout=600)}
    pause = PAUSE if readers > 1 else 0.0
    job = dev.frames(count, points, pause)
    streams = [job.stream() for _ in range(readers)]
    received = [0] * readers
    ended = [0.0] * readers
    began = time.perf_counter()

    def read(i: int) -> None:
        with streams[i] as stream:
            for frame in stream:
                received[i] += frame.nbytes
        ended[i] = time.perf_counter()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job_wall = job.result(timeout=600)
    assert all(r == count * MIB for r in received), received
    return {"mbps": received[0] / (ended[0] - began) / 1e6, "job_wall": job_wall}


def w8_points(ns: tuple[str, int], count: int) -> dict[str, Any]:
    """A job publishing ``count`` small items; the rate at which one reader gets them."""
    dev = _device(ns, "stream")
    job = dev.points(count)
    began = time.perf_counter()
    got, last = 0, None
    with job.stream(max_items=10_000) as stream:
        for item in stream:
            got += 1
            last = item
        dropped = stream.dropped
    elapsed = time.perf_counter() - began
    assert got + dropped == count and last["x"] == count - 1, (got, dropped)
    return {"items_per_s": got / elapsed, "dropped": dropped}


def w9_latency(ns: tuple[str, int], count: int) -> dict[str, Any]:
    """From ``publish`` to the reader's iterator yielding it, against a plain call.

    Items come 10 ms apart, so between them both sides are idle; the plain calls are
    paced the same way (a call every 10 ms), since waking an idle machine costs more
    than a call right after a call (both are reported).
    """
    dev = _device(ns, "stream")
    calls, hot = [], []
    for _ in range(200):
        start = time.perf_counter()
        dev.ping()
        hot.append(time.perf_counter() - start)
    for _ in range(count):
        time.sleep(0.01)
        start = time.perf_counter()
        dev.ping()
        calls.append(time.perf_counter() - start)
    job = dev.stamps(count, 0.01)
    delays = []
    with job.stream() as stream:
        for stamp in stream:
            delays.append(time.monotonic() - stamp)
    return {
        "median": statistics.median(delays[5:]),
        "call": statistics.median(calls),
        "hot_call": statistics.median(hot),
    }


def w10_stalled(ns: tuple[str, int], count: int, stall: float) -> dict[str, Any]:
    """A reader that reads one batch, then stops for ``stall`` s holding its connection
    (``stall`` 0: the same job with no reader, for the baseline)."""
    dev = _device(ns, "stall")
    job = dev.frames(count, 8192, 0.001, 0)  # 64 KiB frames, a millisecond apart
    if not stall:
        return {"job_wall": job.result(timeout=600)}
    stream = job.stream(max_items=10)
    first = [next(stream) for _ in range(10)]  # one batch
    time.sleep(stall)  # stalled, connection held
    job_wall = job.result(timeout=600)
    rest = [int(frame[0]) for frame in stream]
    stream.close()
    read = len(first) + len(rest)
    seen = [int(frame[0]) for frame in first] + rest
    return {
        "job_wall": job_wall,
        "read": read,
        "dropped": stream.dropped,
        # Exactly what it lost: the frames it never saw are the ones counted as dropped
        # (wherever the gap falls: batches already in flight before the stall come first).
        "exact": read + stream.dropped == count
        and seen == sorted(set(seen))
        and count - len(seen) == stream.dropped,
    }


def main(argv: list[str]) -> None:
    host, port, workload, *args = argv
    ns = (host, int(port))
    if workload == "w7":
        result = w7_frames(ns, int(args[0]), int(args[1]))
    elif workload == "w8":
        result = w8_points(ns, int(args[0]))
    elif workload == "w9":
        result = w9_latency(ns, int(args[0]))
    elif workload == "w10":
        result = w10_stalled(ns, int(args[0]), float(args[1]))
    else:
        raise SystemExit(f"unknown workload {workload}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])

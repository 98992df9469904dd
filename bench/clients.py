"""Benchmark clients: ``python -m bench.clients TARGET ADDRESS WORKLOAD [ARGS...]``.

Prints one JSON document. TARGET: ``pyroinst`` (a plain Pyro5 proxy with pyroinst
imported), ``pyroinst-connect`` (``pyroinst.connect()``), ``raw-msgpack``, ``raw-serpent``,
``tcp``.
Raw targets never import pyroinst, so their figures are plain Pyro5's (or plain sockets').
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import sys
import threading
import time
from typing import Any

import numpy as np

from bench.benchdev import make_array


def peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Target:
    """One way of talking to the bench device."""

    def noop(self) -> None: ...
    def fetch(self, n: int) -> np.ndarray: ...
    def upload(self, a: np.ndarray) -> None: ...
    def verify_upload(self, n: int) -> bool: ...
    def clone(self) -> Target: ...


class PyroinstTarget(Target):
    def __init__(self, address: str, name: str = "bench0") -> None:
        import Pyro5.api

        import pyroinst  # noqa: F401 - installs the serializers and fast paths

        self.address, self.name = address, name
        host, port = address.split()
        self.proxy = Pyro5.api.Proxy(f"PYRONAME:{name}@{host}:{port}")

    def noop(self) -> None:
        self.proxy.noop()

    def fetch(self, n: int) -> np.ndarray:
        return self.proxy.array(n)

    def upload(self, a: np.ndarray) -> None:
        self.proxy.upload(a)

    def verify_upload(self, n: int) -> bool:
        return self.proxy.verify_upload(n)

    def clone(self) -> Target:
        return PyroinstTarget(self.address, self.name)


class ConnectTarget(PyroinstTarget):
    """Through ``pyroinst.connect()``: a DeviceProxy (reconnects, per-thread connections)."""

    def __init__(self, address: str, name: str = "bench0") -> None:
        import pyroinst

        self.address, self.name = address, name
        host, port = address.split()
        self.proxy = pyroinst.connect(name, host, int(port))

    def clone(self) -> Target:
        return ConnectTarget(self.address, self.name)


class RawPyroTarget(Target):
    def __init__(self, uri: str, serializer: str) -> None:
        import Pyro5.api

        assert "pyroinst" not in sys.modules
        self.uri, self.serializer = uri, serializer
        self.proxy = Pyro5.api.Proxy(uri)
        self.proxy._pyroSerializer = serializer

    def noop(self) -> None:
        self.proxy.noop()

    def fetch(self, n: int) -> np.ndarray:
        import serpent

        dtype, shape, data = self.proxy.array_bytes(n)
        return np.frombuffer(serpent.tobytes(data), dtype=dtype).reshape(shape)

    def upload(self, a: np.ndarray) -> None:
        self.proxy.upload_bytes(a.dtype.str, list(a.shape), a.tobytes())

    def verify_upload(self, n: int) -> bool:
        return self.proxy.verify_upload(n)

    def clone(self) -> Target:
        return RawPyroTarget(self.uri, self.serializer)


class TcpTarget(Target):
    def __init__(self, address: str) -> None:
        self.address = address
        self.buffers: dict[int, np.ndarray] = {}
        host, port = address.split()
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _recv_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if not n:
                raise ConnectionError("closed")
            got += n

    def noop(self) -> None:
        self.sock.sendall(b"N" + struct.pack("!Q", 0))
        self._recv_into(memoryview(bytearray(1)))

    def fetch(self, n: int) -> np.ndarray:
        self.sock.sendall(b"G" + struct.pack("!Q", n))
        head = bytearray(8)
        self._recv_into(memoryview(head))
        out = self.buffers.get(n)
        if out is None:  # preallocated once per size, then reused
            out = self.buffers[n] = np.empty(struct.unpack("!Q", head)[0] // 8, np.float64)
        self._recv_into(memoryview(out).cast("B"))
        return out

    def upload(self, a: np.ndarray) -> None:
        self.sock.sendall(b"P" + struct.pack("!Q", a.size))
        self.sock.sendall(memoryview(a).cast("B"))
        self._recv_into(memoryview(bytearray(1)))

    def verify_upload(self, n: int) -> bool:
        return True  # the server received exactly n*8 bytes; content is not echoed

    def clone(self) -> Target:
        return TcpTarget(self.address)


def make_target(kind: str, address: str) -> Target:
    if kind == "pyroinst":
        return PyroinstTarget(address)
    if kind == "pyroinst-connect":
        return ConnectTarget(address)
    if kind == "raw-msgpack":
        return RawPyroTarget(address, "msgpack")
    if kind == "raw-serpent":
        return RawPyroTarget(address, "serpent")
    if kind == "tcp":
        return TcpTarget(address)
    raise SystemExit(f"unknown target {kind}")


def w1_latency(t: Target, calls: int) -> dict[str, Any]:
    for _ in range(50):
        t.noop()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        t.noop()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"median": statistics.median(times), "p99": times[int(len(times) * 0.99) - 1]}


def w2_fetch(t: Target, n: int, repeats: int) -> dict[str, Any]:
    expected = make_array(n)
    t.fetch(n)  # warm-up: the server makes and caches its array
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        got = t.fetch(n)
        times.append(time.perf_counter() - start)
        if not (got.dtype == expected.dtype and np.array_equal(got, expected)):
            raise SystemExit(f"fetch of {n} points returned a different array")
        del got
    median = statistics.median(times)
    return {"median": median, "mbps": expected.nbytes / median / 1e6}


def w2u_upload(t: Target, n: int, repeats: int) -> dict[str, Any]:
    a = make_array(n)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        t.upload(a)
        times.append(time.perf_counter() - start)
        if not t.verify_upload(n):
            raise SystemExit(f"upload of {n} points arrived different")
    median = statistics.median(times)
    return {"median": median, "mbps": a.nbytes / median / 1e6}


def w4_throughput(t: Target, threads: int, seconds: float, gate: bool = False) -> dict[str, Any]:
    """Calls/s from ``threads`` threads calling as fast as they can for ``seconds``.

    ``gate``: once every thread has made its first call, print ``ready`` and wait for a
    line on stdin before timing, so that several client processes (W4p) are timed over the
    same seconds, not each from the end of its own start-up (imports and connecting take
    a second or more of CPU, which would eat into the other processes' timed seconds).
    """
    counts = [0] * threads
    warm = threading.Barrier(threads + 1)
    start_gate = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        try:
            mine = t.clone()
            mine.noop()
        except BaseException:
            warm.abort()  # the main thread's wait ends (BrokenBarrierError), not hangs
            raise
        warm.wait()
        start_gate.wait()
        while not stop.is_set():
            mine.noop()
            counts[i] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    warm.wait(timeout=120)
    if gate:
        print("ready", flush=True)
        sys.stdin.readline()
    start_gate.wait()
    began, cpu = time.perf_counter(), os.times()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    wall, after = time.perf_counter() - began, os.times()
    # The process's CPU time while timed: what the clients cost (W4p's ceiling, bench.py).
    cpu_s = after.user - cpu.user + after.system - cpu.system
    return {"calls_per_s": sum(counts) / wall, "calls": sum(counts), "cpu_s": cpu_s}


def w3_jobs(address: str, repeats: int, seconds: float = 0.2) -> dict[str, Any]:
    import pyroinst

    targets = [PyroinstTarget(address, f"bench{i}") for i in range(16)]
    for t in targets:
        t.noop()
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        jobs = [t.proxy.sleep_job(seconds) for t in targets]
        for job in jobs:
            job.result()
        walls.append(time.perf_counter() - start)
        assert all(isinstance(j, pyroinst.JobHandle) for j in jobs)
    return {"median": statistics.median(walls), "ideal": seconds}


def w5_job_overhead(address: str, repeats: int) -> dict[str, Any]:
    t = PyroinstTarget(address, "bench1")
    plain, start_result, start_wait_result = [], [], []
    for _ in range(20):
        t.noop()
        t.proxy.noop_job().result()
    for _ in range(repeats):
        s = time.perf_counter()
        t.noop()
        plain.append(time.perf_counter() - s)
        s = time.perf_counter()
        t.proxy.noop_job().result()
        start_result.append(time.perf_counter() - s)
        s = time.perf_counter()
        job = t.proxy.noop_job()
        job.wait()
        job.result()
        start_wait_result.append(time.perf_counter() - s)
    return {
        "plain": statistics.median(plain),
        "start_result": statistics.median(start_result),
        "start_wait_result": statistics.median(start_wait_result),
    }


def w6_rss(t: Target, n: int) -> dict[str, Any]:
    t.fetch(1000)
    before = peak_rss()
    got = t.fetch(n)
    after = peak_rss()
    assert got.shape == (n,)
    return {"client_growth": after - before, "array_bytes": int(got.nbytes)}


def w12_after_idle(t: Target, n: int, idle: float, repeats: int) -> dict[str, Any]:
    """An array fetched once, then again after ``idle`` seconds (the first after a pause),
    then ``repeats`` times back to back."""
    t.fetch(n)  # the server makes its array; the client's buffer goes back (pyroinst)
    time.sleep(idle)  # the pause under test, not synchronisation
    start = time.perf_counter()
    t.fetch(n)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        t.fetch(n)
        times.append(time.perf_counter() - start)
    return {"first": first, "repeated": statistics.median(times)}


def main(argv: list[str]) -> None:
    kind, address, workload, *args = argv
    if workload == "w3":
        result = w3_jobs(address, int(args[0]))
    elif workload == "w5":
        result = w5_job_overhead(address, int(args[0]))
    else:
        t = make_target(kind, address)
        if workload == "w1":
            result = w1_latency(t, int(args[0]))
        elif workload == "w2":
            result = w2_fetch(t, int(float(args[0])), int(args[1]))
        elif workload == "w2u":
            result = w2u_upload(t, int(float(args[0])), int(args[1]))
        elif workload == "w4":
            result = w4_throughput(t, int(args[0]), float(args[1]), args[2:] == ["gate"])
        elif workload == "w12":
            result = w12_after_idle(t, int(float(args[0])), float(args[1]), int(args[2]))
        elif workload == "w6":
            result = w6_rss(t, int(float(args[0])))
        else:
            raise SystemExit(f"unknown workload {workload}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])

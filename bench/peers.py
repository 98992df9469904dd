"""What users would pick instead of pyroinst, serving the same device: ZeroMQ and rpyc.

    python -m bench.peers serve zmq|rpyc          # prints its address, serves until stdin closes
    python -m bench.peers client zmq|rpyc ADDRESS WORKLOAD [ARGS...]   # prints one JSON

Each peer is written the way its documentation suggests for an instrument server:

* **ZeroMQ**: a ROUTER socket in front of 16 REP worker threads (ZeroMQ's "multithreaded
  server" pattern, so 16 sleeps can run at once, W3), requests and replies as msgpack;
  arrays travel as a raw frame beside a msgpack header (dtype, shape), sent and received
  with ``copy=False``. Live frames (W7) go over PUSH/PULL.
* **rpyc**: a ``ThreadedServer`` (a thread per connection) exposing the device; arrays
  travel as ``(dtype, shape, bytes)`` (rpyc passes bytes by value; a numpy array would be
  a netref, element by element). Live frames (W7) are read by calling ``frame()`` in a
  loop.

Both are optional (``pip install pyroinst[bench]``); ``available()`` tells which are
installed, and bench.py skips the others with a note. Workloads: w1 (small call), w2
(fetch), w2u (upload), w3 (16 jobs × 0.2 s on 16 devices), w4 (calls/s from threads),
w7 (1 MiB frames streamed to one reader).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np

from bench.benchdev import BenchDevice

MIB = 1 << 20
PEERS = {"zmq": "zmq", "rpyc": "rpyc"}


def available() -> dict[str, bool]:
    """Which peers can run here (their package is installed)."""
    return {name: importlib.util.find_spec(module) is not None for name, module in PEERS.items()}


def _until_stdin_closes() -> None:
    sys.stdin.read()


# -- ZeroMQ ------------------------------------------------------------------------------


def _zmq_worker(ctx: Any, dev: BenchDevice) -> None:
    import msgpack
    import zmq

    sock = ctx.socket(zmq.REP)
    sock.connect("inproc://workers")
    while True:
        try:
            frames = sock.recv_multipart(copy=False)
        except zmq.ContextTerminated:
            return
        op, *args = msgpack.unpackb(frames[0].buffer)
        if op == "noop":
            sock.send(msgpack.packb(dev.noop()))
        elif op == "array":
            a = dev.array(args[0])
            head = msgpack.packb([a.dtype.str, list(a.shape)])
            sock.send_multipart([head, a], copy=False)
        elif op == "upload":
            dtype, shape = args
            a = np.frombuffer(frames[1].buffer, dtype=dtype).reshape(shape)
            sock.send(msgpack.packb(dev.upload(a)))
        elif op == "verify":
            sock.send(msgpack.packb(dev.verify_upload(args[0])))
        elif op == "sleep":
            sock.send(msgpack.packb(dev.sleep_job(args[0])))
        elif op == "frames":  # W7: push count 1 MiB frames to the PULL socket at args[1]
            count, address = args
            sock.send(msgpack.packb(None))
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, 16)
            push.connect(address)
            made = [np.full(MIB // 8, float(i)) for i in range(16)]
            for i in range(count):
                push.send(made[i % 16], copy=False)
            push.close(linger=-1)
        else:
            sock.send(msgpack.packb(f"unknown {op}"))


def serve_zmq() -> None:
    import zmq

    ctx = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    port = front.bind_to_random_port("tcp://127.0.0.1")
    back = ctx.socket(zmq.DEALER)
    back.bind("inproc://workers")
    # One device behind 16 worker threads: a request goes to whichever worker is free, so
    # an upload and its check must find the same device.
    dev = BenchDevice()
    for _ in range(16):
        threading.Thread(target=_zmq_worker, args=(ctx, dev), daemon=True).start()
    threading.Thread(target=lambda: _proxy(front, back), daemon=True).start()
    print(f"tcp://127.0.0.1:{port}", flush=True)
    _until_stdin_closes()


def _proxy(front: Any, back: Any) -> None:
    import zmq

    try:
        zmq.proxy(front, back)
    except zmq.ContextTerminated:
        pass


class ZmqClient:
    def __init__(self, address: str) -> None:
        import msgpack
        import zmq

        self.address = address
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.connect(address)
        self.pack, self.unpack = msgpack.packb, msgpack.unpackb

    def call(self, *request: Any) -> Any:
        self.sock.send(self.pack(request))
        return self.unpack(self.sock.recv())

    def noop(self) -> None:
        self.call("noop")

    def fetch(self, n: int) -> np.ndarray:
        self.sock.send(self.pack(("array", n)))
        head, data = self.sock.recv_multipart(copy=False)
        dtype, shape = self.unpack(head.buffer)
        return np.frombuffer(data.buffer, dtype=dtype).reshape(shape)

    def upload(self, a: np.ndarray) -> None:
        self.sock.send_multipart([self.pack(("upload", a.dtype.str, list(a.shape))), a], copy=False)
        self.unpack(self.sock.recv())

    def verify_upload(self, n: int) -> bool:
        return bool(self.call("verify", n))

    def clone(self) -> ZmqClient:
        return ZmqClient(self.address)

    def frames(self, count: int) -> float:
        """``count`` 1 MiB frames pushed to this reader; MB/s from the request to the last."""
        import zmq

        pull = self.ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 16)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        began = time.perf_counter()
        self.call("frames", count, f"tcp://127.0.0.1:{port}")
        received = 0
        for _ in range(count):
            received += len(pull.recv(copy=False).buffer)
        elapsed = time.perf_counter() - began
        pull.close()
        assert received == count * MIB
        return received / elapsed / 1e6

    def sleep_many(self, seconds: float, devices: int) -> float:
        import zmq

        socks = [self.ctx.socket(zmq.REQ) for _ in range(devices)]
        for s in socks:
            s.connect(self.address)
        began = time.perf_counter()
        for s in socks:
            s.send(self.pack(("sleep", seconds)))
        for s in socks:
            s.recv()
        wall = time.perf_counter() - began
        for s in socks:
            s.close()
        return wall


# -- rpyc --------------------------------------------------------------------------------


def _rpyc_service() -> Any:
    import rpyc

    class BenchService(rpyc.Service):
        """The bench device, a separate one per connection (16 connections, 16 devices)."""

        def on_connect(self, conn: Any) -> None:
            self.dev = BenchDevice()
            self.made = [np.full(MIB // 8, float(i)).tobytes() for i in range(16)]
            self.sent = 0

        def exposed_noop(self) -> None:
            return self.dev.noop()

        def exposed_array(self, n: int) -> tuple:
            a = self.dev.array(n)
            return a.dtype.str, tuple(a.shape), a.tobytes()

        def exposed_upload(self, dtype: str, shape: tuple, data: bytes) -> int:
            return self.dev.upload(np.frombuffer(data, dtype=dtype).reshape(shape))

        def exposed_verify(self, n: int) -> bool:
            return self.dev.verify_upload(n)

        def exposed_sleep(self, seconds: float) -> float:
            return self.dev.sleep_job(seconds)

        def exposed_frame(self) -> bytes:
            self.sent += 1
            return self.made[self.sent % 16]

    return BenchService


def serve_rpyc() -> None:
    from rpyc.utils.server import ThreadedServer

    server = ThreadedServer(
        _rpyc_service(),
        hostname="127.0.0.1",
        port=0,
        protocol_config={"allow_public_attrs": False, "sync_request_timeout": 60},
    )
    threading.Thread(target=server.start, daemon=True).start()
    deadline = time.monotonic() + 10
    while server.port == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # the server binds in its own thread; the port shows once bound
    print(f"127.0.0.1 {server.port}", flush=True)
    _until_stdin_closes()
    server.close()


class RpycClient:
    def __init__(self, address: str) -> None:
        import rpyc

        self.address = address
        host, port = address.split()
        self.conn = rpyc.connect(host, int(port), config={"sync_request_timeout": 60})
        self.root = self.conn.root

    def noop(self) -> None:
        self.root.noop()

    def fetch(self, n: int) -> np.ndarray:
        dtype, shape, data = self.root.array(n)
        return np.frombuffer(data, dtype=dtype).reshape(tuple(shape))

    def upload(self, a: np.ndarray) -> None:
        self.root.upload(a.dtype.str, tuple(a.shape), a.tobytes())

    def verify_upload(self, n: int) -> bool:
        return bool(self.root.verify(n))

    def clone(self) -> RpycClient:
        return RpycClient(self.address)

    def frames(self, count: int) -> float:
        began = time.perf_counter()
        received = sum(len(self.root.frame()) for _ in range(count))
        return received / (time.perf_counter() - began) / 1e6

    def sleep_many(self, seconds: float, devices: int) -> float:
        import rpyc

        peers = [self.clone() for _ in range(devices)]
        began = time.perf_counter()
        pending = [rpyc.async_(p.root.sleep)(seconds) for p in peers]
        for result in pending:
            result.wait()
        wall = time.perf_counter() - began
        for p in peers:
            p.conn.close()
        return wall


def client(kind: str, address: str, workload: str, *args: str) -> dict[str, Any]:
    from bench.clients import w1_latency, w2_fetch, w2u_upload, w4_throughput

    t = ZmqClient(address) if kind == "zmq" else RpycClient(address)
    if workload == "w1":
        return w1_latency(t, int(args[0]))  # type: ignore[arg-type]
    if workload == "w2":
        return w2_fetch(t, int(float(args[0])), int(args[1]))  # type: ignore[arg-type]
    if workload == "w2u":
        return w2u_upload(t, int(float(args[0])), int(args[1]))  # type: ignore[arg-type]
    if workload == "w3":
        walls = [t.sleep_many(0.2, 16) for _ in range(int(args[0]))]
        return {"median": statistics.median(walls), "ideal": 0.2}
    if workload == "w4":
        gate = list(args[2:]) == ["gate"]
        return w4_throughput(t, int(args[0]), float(args[1]), gate)  # type: ignore[arg-type]
    if workload == "w7":
        return {"mbps": t.frames(int(args[0]))}
    raise SystemExit(f"unknown workload {workload}")


def main(argv: list[str]) -> None:
    if argv[0] == "serve":
        {"zmq": serve_zmq, "rpyc": serve_rpyc}[argv[1]]()
    elif argv[0] == "client":
        json.dump(client(*argv[1:]), sys.stdout)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Benchmark servers, each run in its own process: ``python -m bench.servers KIND``.

KIND is ``pyroinst`` (an InstServer with 16 BenchDevices, the StreamDevices "stream" and
"stall", and an embedded name server),
``pyro`` (a plain Pyro5 daemon, no pyroinst imported, serving raw bytes) or ``tcp`` (a
length-prefixed socket server). Each prints one line with its address, then serves until
stdin closes.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading

from bench.benchdev import JOBS, BenchDevice, make_array


def _until_stdin_closes() -> None:
    sys.stdin.read()


def serve_pyroinst() -> None:
    import pyroinst

    with socket.socket() as s:  # a free port for the embedded name server
        s.bind(("127.0.0.1", 0))
        ns_port = s.getsockname()[1]
    server = pyroinst.InstServer(host="127.0.0.1", ns_host="127.0.0.1", ns_port=ns_port)
    for i in range(16):
        server.add_device(BenchDevice(), f"bench{i}", jobs=JOBS)
    from bench.streamdev import StreamDevice

    # Live data (W7-W10): room for every item of a run, and a small buffer for W10.
    server.add_device(
        StreamDevice(), "stream", stream_buffer_items=200_000, stream_buffer_bytes=1 << 30
    )
    server.add_device(StreamDevice(), "stall", stream_buffer_bytes=64 << 20)
    with server:
        print(f"127.0.0.1 {ns_port}", flush=True)
        _until_stdin_closes()


class RawBench:
    """What a plain Pyro5 user would write: arrays as (dtype, shape, raw bytes)."""

    def __init__(self) -> None:
        self.dev = BenchDevice()

    def noop(self) -> None:
        return None

    def array_bytes(self, n: int) -> tuple:
        a = self.dev.array(n)
        return a.dtype.str, list(a.shape), a.tobytes()

    def upload_bytes(self, dtype: str, shape: list, data) -> int:
        import numpy as np
        import serpent

        a = np.frombuffer(serpent.tobytes(data), dtype=dtype).reshape(shape)
        return self.dev.upload(a)

    def verify_upload(self, n: int) -> bool:
        return self.dev.verify_upload(n)


def serve_pyro() -> None:
    import Pyro5.server

    assert "pyroinst" not in sys.modules
    daemon = Pyro5.server.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Pyro5.server.expose(RawBench)(), "raw")
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    print(uri, flush=True)
    _until_stdin_closes()
    daemon.shutdown()


def _recv_exact(conn: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if not n:
            raise ConnectionError("peer closed")
        got += n


def _tcp_client(conn: socket.socket) -> None:
    arrays: dict[int, object] = {}
    buffers: dict[int, bytearray] = {}
    header = bytearray(9)
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                _recv_exact(conn, memoryview(header))
            except ConnectionError:
                return
            op, n = header[0:1], struct.unpack("!Q", header[1:])[0]
            if op == b"N":
                conn.sendall(b"k")
            elif op == b"G":
                a = arrays.get(n)
                if a is None:
                    a = arrays[n] = make_array(n)
                conn.sendall(struct.pack("!Q", a.nbytes))
                conn.sendall(memoryview(a).cast("B"))
            elif op == b"P":
                buf = buffers.get(n)
                if buf is None:
                    buf = buffers[n] = bytearray(n * 8)  # preallocated, reused
                _recv_exact(conn, memoryview(buf))
                conn.sendall(b"k")


def serve_tcp() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    print(f"127.0.0.1 {srv.getsockname()[1]}", flush=True)

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=_tcp_client, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    _until_stdin_closes()
    srv.close()


if __name__ == "__main__":
    {"pyroinst": serve_pyroinst, "pyro": serve_pyro, "tcp": serve_tcp}[sys.argv[1]]()

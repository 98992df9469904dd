"""The cost of the lab's token, and a lab under an idle-connection flood, in one run.

``python -m bench.auth`` prints a table of ratios against baselines measured in the same
run, in the same process (server and client share it, so both sides of each ratio pay
the same interpreter overhead):

* A1: connect and first call (a new proxy each time), with a token (challenge and
  response, one more round trip) against without;
* A2: a call on an open connection, with a token against without (nothing per call);
* A3: a call while 300 idle TCP connections from another address sit on the server,
  against the same call without them (every call must be answered);
* A4: an 80 MB array (1e7 float64) fetched with a token (TLS, the proof bound to the
  certificate) and without, against a raw TCP socket pair and a plain Python TLS socket
  pair moving the same bytes (length-prefixed, ``recv_into`` a preallocated buffer): the
  TLS pair is the ceiling a token's connection can approach.
"""

from __future__ import annotations

import socket
import statistics
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import Pyro5.api  # noqa: E402

import pyroinst  # noqa: E402
from pyroinst import EmbeddedNameServer, InstServer, identity  # noqa: E402
from tests.helpers import Echo  # noqa: E402

TOKEN = "bench-token-" + "x" * 32
ROUNDS = 400
FLOOD = 300
POINTS = 10_000_000
FETCHES = 7


class Source(Echo):
    """The Echo device plus an 80 MB array to fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.data = np.random.default_rng(1).random(POINTS)

    def fetch(self) -> np.ndarray:
        """The array (sent from its own memory)."""
        return self.data


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    while view.nbytes:
        got = sock.recv_into(view)
        if not got:
            raise ConnectionError("closed")
        view = view[got:]


def socket_pair_seconds(tls: bool) -> float:
    """Median seconds to move the array's bytes once over a loopback socket pair (raw
    TCP, or TLS with this PC's identity), length-prefixed, into a preallocated buffer."""
    payload = memoryview(np.random.default_rng(1).random(POINTS)).cast("B")
    listener = socket.create_server(("127.0.0.1", 0))
    server_ctx = identity.server_identity().context if tls else None

    def serve() -> None:
        conn, _ = listener.accept()
        if server_ctx is not None:
            conn = server_ctx.wrap_socket(conn, server_side=True)
        with conn:
            for _ in range(FETCHES):
                if conn.recv(1) != b"?":
                    return
                conn.sendall(struct.pack("!Q", payload.nbytes))
                conn.sendall(payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client: socket.socket = socket.create_connection(listener.getsockname())
    if tls:
        client = identity.client_context().wrap_socket(client)
    buffer = bytearray(payload.nbytes)
    samples = []
    with client:
        for _ in range(FETCHES):
            start = time.perf_counter()
            client.sendall(b"?")
            size = bytearray(8)
            _recv_exact(client, memoryview(size))
            _recv_exact(client, memoryview(buffer)[: struct.unpack("!Q", size)[0]])
            samples.append(time.perf_counter() - start)
    thread.join(10)
    listener.close()
    return statistics.median(samples)


def fetch_seconds(uri: str) -> float:
    proxy = Pyro5.api.Proxy(uri)
    proxy.fetch()
    samples = []
    for _ in range(FETCHES):
        start = time.perf_counter()
        data = proxy.fetch()
        samples.append(time.perf_counter() - start)
        assert data.shape == (POINTS,)
        del data
    proxy._pyroRelease()
    return statistics.median(samples)


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def connects(uri: str) -> float:
    samples = []
    for i in range(ROUNDS):
        start = time.perf_counter()
        proxy = Pyro5.api.Proxy(uri)
        proxy.echo(i)
        samples.append(time.perf_counter() - start)
        proxy._pyroRelease()
    return _median_us(samples)


def calls(uri: str) -> float:
    proxy = Pyro5.api.Proxy(uri)
    proxy.echo(0)
    samples = []
    for i in range(ROUNDS * 5):
        start = time.perf_counter()
        proxy.echo(i)
        samples.append(time.perf_counter() - start)
    proxy._pyroRelease()
    return _median_us(samples)


def serve(token: str | None) -> tuple[EmbeddedNameServer, InstServer]:
    pyroinst.set_token(token)
    ns = EmbeddedNameServer("127.0.0.1", 0, token=token).start()
    server = InstServer(ns_host=ns.host, ns_port=ns.port, token=token, heartbeat=0)
    server.add_device(Source(), "dev")
    return ns, server.start()


def main() -> None:
    rows, results, fetched = [], {}, {}
    tcp, tls = socket_pair_seconds(False), socket_pair_seconds(True)
    for token in (None, TOKEN):
        ns, server = serve(token)
        try:
            uri = server.uri("dev")
            results[token is not None] = (connects(uri), calls(uri))
            fetched[token is not None] = fetch_seconds(uri)
            if token is not None:
                host, port = server.location.rsplit(":", 1)
                idle = [
                    socket.create_connection((host, int(port)), source_address=("127.0.0.2", 0))
                    for _ in range(FLOOD)
                ]
                try:
                    flooded = calls(uri)
                finally:
                    for sock in idle:
                        sock.close()
        finally:
            server.stop()
            ns.stop()
            pyroinst.set_token(None)
    (c0, p0), (c1, p1) = results[False], results[True]
    rows.append(
        ("A1 connect + first call", f"{c1:.0f} µs", f"{c1 / c0:.2f} × no token ({c0:.0f} µs)")
    )
    rows.append(
        ("A2 call, open connection", f"{p1:.0f} µs", f"{p1 / p0:.2f} × no token ({p0:.0f} µs)")
    )
    rows.append(
        (f"A3 call, {FLOOD} idle connections", f"{flooded:.0f} µs", f"{flooded / p1:.2f} × none")
    )
    megabytes = POINTS * 8 / 1e6

    def rate(seconds: float) -> str:
        return f"{seconds * 1e3:.1f} ms, {megabytes / seconds:.0f} MB/s"

    rows.append(("A4 80 MB fetch, raw TCP pair", rate(tcp), "1.00 × TCP"))
    rows.append(("A4 80 MB fetch, plain TLS pair", rate(tls), f"{tcp / tls:.2f} × TCP"))
    rows.append(
        (
            "A4 80 MB fetch, pyroinst without token",
            rate(fetched[False]),
            f"{tcp / fetched[False]:.2f} × TCP",
        )
    )
    rows.append(
        (
            "A4 80 MB fetch, pyroinst with token (TLS)",
            rate(fetched[True]),
            f"{tcp / fetched[True]:.2f} × TCP, {tls / fetched[True]:.2f} × the TLS pair",
        )
    )
    print("| workload | with token | ratio |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    main()

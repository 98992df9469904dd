"""The cost of the lab's token, and a lab under an idle-connection flood, in one run.

``python -m bench.auth`` prints a table of ratios against baselines measured in the same
run, in the same process (server and client share it, so both sides of each ratio pay
the same interpreter overhead):

* A1: connect and first call (a new proxy each time), with a token (challenge and
  response, one more round trip) against without;
* A2: a call on an open connection, with a token against without (nothing per call);
* A3: a call while 300 idle TCP connections from another address sit on the server,
  against the same call without them (every call must be answered).
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import Pyro5.api  # noqa: E402

import pyroinst  # noqa: E402
from pyroinst import EmbeddedNameServer, InstServer  # noqa: E402
from tests.helpers import Echo  # noqa: E402

TOKEN = "bench-token-" + "x" * 32
ROUNDS = 400
FLOOD = 300


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
    server.add_device(Echo(), "dev")
    return ns, server.start()


def main() -> None:
    rows, results = [], {}
    for token in (None, TOKEN):
        ns, server = serve(token)
        try:
            uri = server.uri("dev")
            results[token is not None] = (connects(uri), calls(uri))
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
    print("| workload | with token | ratio |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    main()

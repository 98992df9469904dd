"""The web benchmark's lab, in its own process: ``python -m bench.webdev``.

A name server, an InstServer with a ``WebBench`` device, and ``pyroinst web`` in front of
it, all on 127.0.0.1 with a token. Prints "<web url> <token> <pid>", serves until stdin
closes.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import pyroinst
from bench.benchdev import make_array
from pyroinst import EmbeddedNameServer, InstServer, current_job, job
from pyroinst.web.runner import WebServer

TOKEN = "web-bench-token-" + "z" * 24


class WebBench:
    """Jobs that publish what the dashboard plots, and a large result to download."""

    @job
    def big(self, n: int) -> np.ndarray:
        """``n`` float64 points (the same as bench.benchdev.make_array)."""
        return make_array(n)

    @job
    def ticks(self, count: int, period: float) -> int:
        """Publish ``time.time()`` ``count`` times, ``period`` s apart (for latency)."""
        ctx = current_job()
        for _ in range(count):
            ctx.publish(time.time())
            ctx.sleep(period)
        return count

    @job
    def lines(self, count: int, points: int = 1000, period: float = 0.02) -> int:
        """Publish ``count`` 1-D arrays of ``points`` points, ``period`` s apart."""
        ctx = current_job()
        x = np.linspace(0, 4 * np.pi, points)
        for i in range(count):
            ctx.publish(np.sin(x + i * 0.1))
            ctx.sleep(period)
        return count

    @job
    def images(self, count: int, size: int = 512, period: float = 0.05) -> int:
        """Publish ``count`` ``size`` x ``size`` images (a moving spot), ``period`` s apart."""
        ctx = current_job()
        y, x = np.mgrid[0:size, 0:size] / size
        for i in range(count):
            cx, cy = 0.5 + 0.3 * np.cos(i / 10), 0.5 + 0.3 * np.sin(i / 10)
            ctx.publish(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) * 40))
            ctx.sleep(period)
        return count


def main() -> None:
    pyroinst.set_token(TOKEN)
    with EmbeddedNameServer("127.0.0.1", 0, token=TOKEN) as ns:
        server = InstServer(ns_host=ns.host, ns_port=ns.port, token=TOKEN, heartbeat=0)
        from bench.webdev import WebBench as Bench  # its class named by module, not __main__

        server.add_device(Bench(), "web", stream_buffer_bytes=1 << 30)
        # The fan-out figure opens 100 streams from one address: above the default cap.
        web_server = WebServer("127.0.0.1", 0, ns.host, ns.port, TOKEN, max_streams=256)
        with server, web_server as web:
            print(f"{web.url} {TOKEN}", flush=True)
            sys.stdin.read()


if __name__ == "__main__":
    main()

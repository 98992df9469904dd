"""A device server for the memory tests, in its own process (its RSS is measured from outside).

``python -m tests.memory_server NS_HOST NS_PORT [--max-result-bytes N]`` serves ``bulk0`` to
``bulk3`` (``Bulk``), prints "READY", and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

import pyroinst
from pyroinst import InstServer


class Bulk:
    """Moves big arrays: takes uploads, returns downloads, produces big job results."""

    def upload(self, a: np.ndarray) -> int:
        """The size of the uploaded array, in bytes."""
        return int(a.nbytes)

    def download(self, mb: int) -> np.ndarray:
        """An array of ``mb`` MiB."""
        return np.ones(mb * 2**20 // 8)

    @pyroinst.job
    def produce(self, mb: int) -> np.ndarray:
        """A job whose result is ``mb`` MiB."""
        return np.ones(mb * 2**20 // 8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ns_host")
    parser.add_argument("ns_port", type=int)
    parser.add_argument("--max-result-bytes", type=int, default=1 << 30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server = InstServer(
        ns_host=args.ns_host,
        ns_port=args.ns_port,
        embed_ns=False,
        heartbeat=0,
        max_result_bytes=args.max_result_bytes,
    )
    for i in range(4):
        server.add_device(Bulk(), f"bulk{i}")
    with server:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        sys.stdin.read()


if __name__ == "__main__":
    main()

"""One server of the lab benchmark: ``python -m bench.labserver NS_HOST NS_PORT COUNT PREFIX``.

Prints "BASE <rss bytes>" before its devices exist, then "READY" once COUNT devices
(PREFIX0, PREFIX1, ...) are registered; serves until stdin closes.
"""

from __future__ import annotations

import logging
import sys

from pyroinst import InstServer


class Tiny:
    """A device with one quick method."""

    def value(self) -> float:
        """A number."""
        return 1.0


def rss() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ns_host, ns_port, count, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server = InstServer(ns_host=ns_host, ns_port=ns_port, embed_ns=False)
    server.start()
    sys.stdout.write(f"BASE {rss()}\n")
    sys.stdout.flush()
    for i in range(count):
        server.add_device(Tiny(), f"{prefix}{i}")
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""Servers for the fuzz test, in their own process: a name server and a device server.

``python -m tests.fuzz_target``: prints "READY <ns port> <device uri>", logs to stderr,
serves until stdin closes.
"""

from __future__ import annotations

import logging
import sys

from pyroinst import EmbeddedNameServer, InstServer
from tests.helpers import Echo


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    with EmbeddedNameServer("127.0.0.1", 0) as ns:
        server = InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
        server.add_device(Echo(), "dev")
        with server:
            sys.stdout.write(f"READY {ns.port} {server.uri('dev')}\n")
            sys.stdout.flush()
            sys.stdin.read()


if __name__ == "__main__":
    main()

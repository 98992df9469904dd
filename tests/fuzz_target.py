"""Servers for the hostile-input tests, in their own process: a name server and a device server.

``python -m tests.fuzz_target [--handshake-timeout S] [--max-queued-jobs N]
[--max-message-size B]``: prints "READY <ns port> <device uri>", logs to stderr, serves
until stdin closes. The token comes from PYROINST_TOKEN.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pyroinst import EmbeddedNameServer, InstServer
from tests.helpers import Echo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--handshake-timeout", type=float, default=5.0)
    parser.add_argument("--max-queued-jobs", type=int, default=1000)
    parser.add_argument("--max-message-size", type=int, default=None)
    options = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    with EmbeddedNameServer("127.0.0.1", 0, handshake_timeout=options.handshake_timeout) as ns:
        server = InstServer(
            ns_host=ns.host,
            ns_port=ns.port,
            heartbeat=0,
            handshake_timeout=options.handshake_timeout,
            max_queued_jobs=options.max_queued_jobs,
            max_message_size=options.max_message_size,
        )
        server.add_device(Echo(), "dev")
        with server:
            sys.stdout.write(f"READY {ns.port} {server.uri('dev')}\n")
            sys.stdout.flush()
            sys.stdin.read()


if __name__ == "__main__":
    main()

"""A device server in its own process, for tests: ``python -m tests.serve_helper NS_HOST NS_PORT``.

Serves ``dev`` (DummyDevice) and ``echo`` (Echo); options set the port, heartbeat and
thread pool. Prints "READY <uri of echo>" once registered; Ctrl-C/SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from devices.dummy import DummyDevice
from pyroinst import InstServer
from tests.helpers import Echo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ns_host")
    parser.add_argument("ns_port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--advertise", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--threadpool", type=int, default=200)
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    server = InstServer(
        host=args.host,
        port=args.port,
        ns_host=args.ns_host,
        ns_port=args.ns_port,
        advertise=args.advertise,
        heartbeat=args.heartbeat,
        threadpool_size=args.threadpool,
        embed_ns=False,
    )
    server.add_device(DummyDevice(idn_delay=0.01), f"{args.prefix}dev")
    server.add_device(Echo(), f"{args.prefix}echo")
    server.start()
    sys.stdout.write(f"READY {server.uri(args.prefix + 'echo')}\n")
    sys.stdout.flush()
    server.run()


if __name__ == "__main__":
    main()

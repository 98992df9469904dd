"""Pyro5's name server, embedded in a device server or run on its own for the lab.

``EmbeddedNameServer(host, port).start()`` runs one in a background thread of this
process; ``python -m pyroinst.nameserver`` (what ``nameserver.sh`` runs) runs one in the
foreground. Host and port default to ``PYROINST_NS_HOST``/``PYROINST_NS_PORT``, else
localhost:9090. Pyro5 answers broadcast lookups only when the name server is bound to a
non-loopback address; on loopback no broadcast responder is started.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

import Pyro5.nameserver

from .client import ns_address

__all__ = ["EmbeddedNameServer", "main", "DEFAULT_NS_HOST", "DEFAULT_NS_PORT"]

log = logging.getLogger(__name__)

DEFAULT_NS_HOST = "localhost"
DEFAULT_NS_PORT = 9090


class EmbeddedNameServer:
    """A Pyro5 name server served from a background thread of this process.

    ``port=0`` picks a free port; ``host``/``port`` then tell where it listens.
    """

    def __init__(self, host: str = DEFAULT_NS_HOST, port: int = DEFAULT_NS_PORT) -> None:
        self._requested = (host, port)
        self._daemon: Any = None
        self._bcserver: Any = None
        self._thread: threading.Thread | None = None
        self.uri: str | None = None

    @property
    def host(self) -> str:
        """The address the name server listens on."""
        return self._daemon.sock.getsockname()[0] if self._daemon else self._requested[0]

    @property
    def port(self) -> int:
        """The port the name server listens on."""
        return self._daemon.sock.getsockname()[1] if self._daemon else self._requested[1]

    def start(self) -> EmbeddedNameServer:
        """Bind and start serving (OSError if the address is taken)."""
        host, port = self._requested
        uri, daemon, bcserver = Pyro5.nameserver.start_ns(host=host, port=port)
        self._daemon, self._bcserver, self.uri = daemon, bcserver, str(uri)
        if bcserver is not None:
            bcserver.runInThread()
        self._thread = threading.Thread(
            target=daemon.requestLoop, daemon=True, name="pyroinst-nameserver"
        )
        self._thread.start()
        log.info(
            "name server running at %s (broadcast %s)",
            self.uri,
            "on" if bcserver is not None else "off: loopback address",
        )
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._daemon is None:
            return
        self._daemon.shutdown()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._bcserver is not None:
            self._bcserver.close()
        self._daemon.close()
        self._daemon = None
        log.info("name server %s stopped", self.uri)

    def __enter__(self) -> EmbeddedNameServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a name server in the foreground until Ctrl-C or SIGTERM."""
    host, port = ns_address()
    parser = argparse.ArgumentParser(
        prog="python -m pyroinst.nameserver",
        description="Run a Pyro5 name server for the lab in the foreground.",
    )
    parser.add_argument(
        "--host",
        default=host or DEFAULT_NS_HOST,
        help="address to bind (env PYROINST_NS_HOST; default localhost)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=port or DEFAULT_NS_PORT,
        help="port to bind (env PYROINST_NS_PORT; default 9090)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        ns = EmbeddedNameServer(args.host, args.port).start()
    except OSError as exc:
        log.error("cannot start a name server on %s:%s: %s", args.host, args.port, exc)
        return 1
    log.info(
        "name server ready: clients use PYROINST_NS_HOST=%s PYROINST_NS_PORT=%d", ns.host, ns.port
    )
    while not stop.wait(0.5):
        pass
    ns.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

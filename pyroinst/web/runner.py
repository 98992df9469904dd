"""Running the web server with uvicorn: in a thread (``WebServer``) or in the foreground."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from .access import check_bind
from .app import create_app, login_url
from .feeds import MAX_STREAMS
from .pool import MAX_DEVICE_CONNECTIONS

__all__ = ["WebServer"]

log = logging.getLogger(__name__)


class WebServer:
    """The web server on ``host``:``port`` (0: a free port), a client of the lab at
    ``ns_host``:``ns_port`` with ``token``. ``start()`` runs it in a thread, ``run()``
    in this one (until ``stop()`` or a signal); ``url`` is where it answers and
    ``login_url`` the link that logs a browser in.

    ConfigurationError at once if ``host`` is not a loopback address and there is no
    token. ``allow_hosts``: other host names it answers to (a proxy in front);
    ``max_streams``: event streams one client (a browser session, else an address) may
    hold at once; ``max_device_connections``: connections to one device server.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, ns_host: str | None = None,
                 ns_port: int | None = None, token: str | None = None, log_level: str = "warning",
                 allow_hosts: tuple[str, ...] = (), max_streams: int = MAX_STREAMS,
                 max_device_connections: int = MAX_DEVICE_CONNECTIONS) -> None:  # fmt: skip
        check_bind(host, token)
        self.host = host
        self.token = token
        self.app = create_app(
            ns_host,
            ns_port,
            token,
            bind_host=host,
            allow_hosts=allow_hosts,
            max_streams=max_streams,
            max_device_connections=max_device_connections,
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self._socket.listen(128)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level=log_level, access_log=False, timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The bare URL of the dashboard."""
        return login_url(self.host, self.port, None)

    @property
    def login_url(self) -> str:
        """The URL that logs a browser in (the bare URL without a token)."""
        return login_url(self.host, self.port, self.token)

    def run(self, install_signal_handlers: bool = True) -> None:
        """Serve in this thread until ``stop()`` (or SIGINT/SIGTERM)."""
        if not install_signal_handlers:
            self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def start(self, timeout: float = 10.0) -> WebServer:
        """Serve in a background thread; returns once it answers."""
        self._thread = threading.Thread(
            target=self.run, kwargs={"install_signal_handlers": False}, daemon=True,
            name="pyroinst-web",
        )  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (open event streams end) and wait for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

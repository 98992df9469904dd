"""A relay that tampers: between a client and a server, forwarding, injecting, rewriting,
or ending TLS itself with a certificate of its own (a man in the middle)."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import tempfile
import threading

from pyroinst import identity


def _own_context(cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    """A TLS server context with ``cert`` (certificate and key files), else a fresh
    self-signed certificate (not the server's)."""
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*cert)
        return context
    pem = identity._make_pem()
    with tempfile.NamedTemporaryFile(suffix=".pem") as tmp:
        os.chmod(tmp.name, 0o600)
        tmp.write(pem)
        tmp.flush()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp.name)
    return context


class TamperingRelay:
    """Listens on 127.0.0.1 and relays every connection to ``target``.

    ``terminate=False``: the bytes go through as they are (TLS end to end), except that an
    armed ``inject`` is sent to the server before the client's next bytes, and an armed
    ``flip_down`` changes one byte of the server's next bytes to the client.
    ``terminate=True``: the relay ends the client's TLS with its own certificate and opens
    its own TLS to the server, so it sees and may change the plain messages; ``inject``
    then goes to the server inside the relay's TLS, right after the client's next bytes.
    """

    def __init__(
        self,
        target: tuple[str, int],
        terminate: bool = False,
        host: str = "127.0.0.1",
        cert: tuple[str, str] | None = None,
    ) -> None:
        self.target = target
        self.terminate = terminate
        self.context = _own_context(cert) if terminate else None
        self.inject: bytes | None = None
        self.flip_down = False
        self.injected = 0
        self.flipped = 0
        self.errors: list[str] = []
        self.host = host
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._start(self._accept)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self._start(self._session, client)

    def _session(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
            if self.terminate:
                assert self.context is not None
                client.settimeout(5)
                client = self.context.wrap_socket(client, server_side=True)
                server = identity.client_context().wrap_socket(server)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(f"session: {exc}")
            client.close()
            return
        with self._lock:
            self._sockets += [client, server]
        self._start(self._pump, client, server, "up")
        self._start(self._pump, server, client, "down")

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        source.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = source.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except (OSError, ssl.SSLError) as exc:
                self.errors.append(f"{direction}: {exc}")
                data = b""
            if not data:
                with contextlib.suppress(OSError, ssl.SSLError):
                    sink.shutdown(socket.SHUT_WR)
                return
            try:
                if direction == "up" and self.inject is not None:
                    payload, self.inject = self.inject, None
                    self.injected += 1
                    if self.terminate:
                        sink.sendall(data)  # the client's message first, then the forged one
                        sink.sendall(payload)
                        continue
                    sink.sendall(payload)
                if direction == "down" and self.flip_down and len(data) > 16:
                    self.flip_down = False
                    self.flipped += 1
                    middle = len(data) // 2
                    data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
                sink.sendall(data)
            except (OSError, ssl.SSLError) as exc:
                self.errors.append(f"{direction} send: {exc}")
                return

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        with self._lock:
            for sock in [self.listener, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> TamperingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

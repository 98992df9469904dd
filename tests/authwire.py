"""Test tools for the token protocol: a recording TCP relay, raw protocol clients, a parser."""

from __future__ import annotations

import contextlib
import secrets
import selectors
import socket
import struct
import threading
from typing import Any

from Pyro5 import protocol, serializers
from Pyro5.socketutil import SocketConnection

from pyroinst import identity
from pyroinst.auth import PROOF_ANNOTATION, VERSION, client_proof
from pyroinst.keys import parse_token

SERPENT = serializers.serializers["serpent"]
HEADER = struct.Struct(protocol._header_format)


class RecordingRelay:
    """A transparent TCP forwarder on 127.0.0.1 that records both directions per connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sessions: list[dict[str, bytearray]] = []
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            server = socket.create_connection(self.target)
            session = {"up": bytearray(), "down": bytearray()}
            self.sessions.append(session)
            self._sockets += [client, server]
            thread = threading.Thread(
                target=self._pump, args=(client, server, session), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _pump(self, client: socket.socket, server: socket.socket, session: dict) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, ("up", server))
            selector.register(server, selectors.EVENT_READ, ("down", client))
            while not self._stop:
                for key, _ in selector.select(0.2):
                    direction, other = key.data
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        with contextlib.suppress(OSError):
                            other.shutdown(socket.SHUT_WR)
                        selector.unregister(key.fileobj)
                        if not selector.get_map():
                            return
                        continue
                    session[direction] += data
                    other.sendall(data)

    @property
    def uploaded(self) -> bytes:
        """Everything clients sent, all connections."""
        return b"".join(bytes(s["up"]) for s in self.sessions)

    @property
    def downloaded(self) -> bytes:
        """Everything servers sent, all connections."""
        return b"".join(bytes(s["down"]) for s in self.sessions)

    def close(self) -> None:
        self._stop = True
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)
        for sock in [self.listener, *self._sockets]:
            sock.close()


def message(
    msgtype: int,
    payload: bytes,
    annotations: dict[str, bytes] | None = None,
    seq: int = 0,
    serializer_id: int = SERPENT.serializer_id,
) -> bytes:
    """One Pyro5 message as bytes."""
    return bytes(
        protocol.SendingMessage(
            msgtype, 0, seq, serializer_id, payload, annotations=annotations
        ).data
    )


def connect_message(handshake: Any, object_id: str = "dev") -> bytes:
    """A CONNECT carrying ``handshake`` (serpent)."""
    return message(
        protocol.MSG_CONNECT, SERPENT.dumps({"handshake": handshake, "object": object_id})
    )


def parse(data: bytes) -> list[tuple[int, int, dict[str, bytes], bytes, int]]:
    """(type, flags, annotations, payload, serializer id) of each complete Pyro5 message."""
    out = []
    while len(data) >= HEADER.size:
        fields = HEADER.unpack(data[: HEADER.size])
        msgtype, serializer_id, flags = fields[2], fields[3], fields[4]
        data_size, ann_size = fields[6], fields[7]
        end = HEADER.size + ann_size + data_size
        if len(data) < end:
            break
        annotations, pos = {}, HEADER.size
        while pos < HEADER.size + ann_size:
            key, length = struct.unpack("!4sI", data[pos : pos + 8])
            annotations[key.decode("ascii")] = data[pos + 8 : pos + 8 + length]
            pos += 8 + length
        out.append((msgtype, flags, annotations, data[HEADER.size + ann_size : end], serializer_id))
        data = data[end:]
    return out


def decoded(reply: tuple) -> object:
    """The payload of a parsed message, decoded with its serializer."""
    return serializers.serializers_by_id[reply[4]].loads(reply[3])


def exchange(
    address: tuple[str, int],
    data: bytes,
    source: str = "127.0.0.1",
    timeout: float = 5.0,
    replies: int | None = None,
) -> bytes:
    """Send ``data`` on a fresh connection; what comes back until it closes (or until
    ``replies`` messages arrived; or ``timeout``)."""
    with socket.create_connection(address, timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        received = bytearray()
        with contextlib.suppress(TimeoutError, OSError):
            while chunk := sock.recv(65536):
                received += chunk
                if replies is not None and len(parse(bytes(received))) >= replies:
                    break
        return bytes(received)


class RawClient:
    """A connection that speaks the protocol by hand (from any loopback address): TLS,
    then the challenge and the proof bound to the certificate it saw (``tls=False``: no
    TLS, as a plain Pyro5 script connects)."""

    def __init__(
        self,
        address: tuple[str, int],
        source: str = "127.0.0.1",
        timeout: float = 10.0,
        tls: bool = True,
    ) -> None:
        sock = socket.create_connection(address, timeout=timeout, source_address=(source, 0))
        self.binding = b""
        if tls:
            sock = identity.client_context().wrap_socket(sock)
            self.binding = identity.binding(sock.getpeercert(binary_form=True))
        self.conn = SocketConnection(sock)
        self.client_nonce = secrets.token_bytes(32)

    def hello(self, object_id: str = "dev", key_name: str = "lab") -> tuple[int, Any]:
        """Send the challenge; (reply type, decoded handshake answer)."""
        self.conn.send(
            connect_message(
                {"pyroinst_auth": VERSION, "nonce": self.client_nonce.hex(), "key": key_name},
                object_id,
            )
        )
        reply = self.receive()
        return reply[0], decoded(reply)

    def prove(
        self, token: str, server_nonce_hex: str, binding: bytes | None = None
    ) -> tuple[int, dict[str, bytes], Any]:
        """Send the proof for ``token`` (bound to ``binding``, default the certificate
        seen); (reply type, annotations, decoded payload)."""
        proof = client_proof(
            parse_token(token).derived,
            self.client_nonce,
            bytes.fromhex(server_nonce_hex),
            self.binding if binding is None else binding,
        )
        self.conn.send(message(protocol.MSG_PING, b"", {PROOF_ANNOTATION: proof}))
        reply = self.receive()
        return reply[0], reply[2], (decoded(reply) if reply[0] != protocol.MSG_PING else None)

    def receive(self) -> tuple[int, int, dict[str, bytes], bytes, int]:
        """One message."""
        header = self.conn.recv(HEADER.size)
        fields = HEADER.unpack(header)
        rest = self.conn.recv(fields[6] + fields[7]) if fields[6] + fields[7] else b""
        return parse(header + rest)[0]

    def authenticate(self, token: str, object_id: str = "dev") -> None:
        """The whole protocol; AssertionError unless the server proved itself."""
        msgtype, answer = self.hello(object_id, parse_token(token).name)
        assert msgtype == protocol.MSG_CONNECTOK, answer
        reply_type, annotations, _ = self.prove(token, answer["handshake"]["nonce"])
        assert reply_type == protocol.MSG_PING and PROOF_ANNOTATION in annotations

    def closed(self, timeout: float = 0.0) -> bool:
        """True if the server closed the connection (EOF within ``timeout``)."""
        sock = self.conn.sock
        sock.settimeout(timeout or 0.001)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return True
        except (TimeoutError, BlockingIOError):
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.conn.close()

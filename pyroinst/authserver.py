"""The server's half of the lab's token protocol (the protocol: ``pyroinst.auth``).

``ServerAuth`` answers a client's handshake (the challenge, a plain token where allowed,
refusals after the failure delay) and checks the connection's first message, the
client's proof; ``AuthDaemon`` puts it into a Pyro5 daemon.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import ssl
import threading
from collections import OrderedDict
from typing import Any

import Pyro5.errors
from Pyro5 import config as pyro_config
from Pyro5 import protocol

from .auth import (
    _DEFAULT_HANDSHAKE,
    NONCE_BYTES,
    PROOF_ANNOTATION,
    VERSION,
    _connect_fail,
    _nonce,
    _peer,
    client_proof,
    server_proof,
)
from .errors import AuthenticationFailed
from .keys import KeyRing

__all__ = ["ServerAuth", "AuthDaemon", "UNPROVEN_MAX"]

log = logging.getLogger(__name__)

#: Client nonces a server remembers, to refuse a replayed CONNECT.
_SEEN_NONCES = 50_000
#: The largest message a connection may send before it proved itself.
UNPROVEN_MAX = 64 * 1024


class _Challenge:
    """A connection's pending proof (server side): what the client must send, the answer,
    and whose key it is."""

    __slots__ = ("expected", "answer", "host", "where", "user")

    def __init__(
        self, key: bytes, nonces: tuple[bytes, bytes], cb: bytes, conn: Any, user: str
    ) -> None:
        self.expected = client_proof(key, *nonces, cb)
        self.answer = server_proof(key, *nonces, cb)
        self.host, self.where = _peer(conn)
        self.user = user


class ServerAuth:
    """A daemon's side of the protocol: the keys it takes (``keys``, a KeyRing, or None
    to take every client), the channel binding of its certificate (``binding``), whether
    it takes plain tokens, and who failed how often (``failures``: a
    ``pyroinst.admission.FailureTracker``)."""

    def __init__(
        self, keys: KeyRing | None, accept_plain_token: bool, failures: Any, binding: bytes = b""
    ) -> None:
        self.keys = keys
        self.binding = binding
        self.accept_plain_token = bool(accept_plain_token)
        self.failures = failures
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._plain_logged: set[str] = set()
        self._lock = threading.Lock()

    def answer(self, conn: Any, data: Any) -> dict[str, Any]:
        """The handshake answer for a client's handshake ``data`` (AuthenticationFailed
        after the failure delay if it is refused)."""
        answer: dict[str, Any] = {"pyroinst": 1, "max_message_size": pyro_config.MAX_MESSAGE_SIZE}
        if self.keys is None:
            conn._pyroinst_proven = True
            return answer
        if isinstance(data, dict) and "pyroinst_auth" in data:
            return self._challenge(conn, data, answer)
        if isinstance(data, str) and data != _DEFAULT_HANDSHAKE:
            if not self.accept_plain_token:
                self._refuse(conn, "a plain token, which this server does not take", _NO_PLAIN)
            user = self._plain_user(data)
            if user is None:
                self._refuse(conn, "a wrong plain token", _NEEDS_TOKEN)
            host, where = _peer(conn)
            if host not in self._plain_logged:
                self._plain_logged.add(host)
                log.warning(
                    "accepted the lab's token sent as plain text from %s (accept_plain_token "
                    "is on): anyone who recorded that connection has the token",
                    where,
                )
            self.failures.succeeded(host)
            conn._pyroinst_proven = True
            conn._pyroinst_user = user
            return answer
        self._refuse(conn, "no token", _NEEDS_TOKEN)
        raise AssertionError("not reached")

    def _challenge(self, conn: Any, data: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        assert self.keys is not None
        if data.get("pyroinst_auth") != VERSION:
            self._refuse(conn, "another version of the protocol", _OLD_CLIENT)
        client_nonce = _nonce(data.get("nonce"))
        name = data.get("key")
        if client_nonce is None or not isinstance(name, str) or len(data) != 3:
            self._refuse(conn, "a malformed challenge", _NEEDS_TOKEN)
        assert client_nonce is not None and isinstance(name, str)
        if not isinstance(getattr(conn, "sock", None), ssl.SSLSocket):
            self._refuse(conn, "a challenge without TLS", _NEEDS_TLS)
        key = self.keys.get(name)
        if key is None:
            shown = name[:64].encode("ascii", "backslashreplace").decode()
            self._refuse(
                conn,
                f"an unknown key name {shown!r}",
                f"authentication failed: this server has no key named {shown!r} (removed "
                "from its key file, or another lab's key): ask the lab's admin for yours",
            )
            assert key is not None
        with self._lock:
            replayed = client_nonce in self._seen
            if not replayed:
                self._seen[client_nonce] = None
                if len(self._seen) > _SEEN_NONCES:
                    self._seen.popitem(last=False)
        if replayed:
            self._refuse(conn, "a reused nonce (a replayed handshake)", _NEEDS_TOKEN)
        server_nonce = secrets.token_bytes(NONCE_BYTES)
        conn._pyroinst_challenge = _Challenge(
            key.derived, (client_nonce, server_nonce), self.binding, conn, key.name
        )
        answer["nonce"] = server_nonce.hex()
        return answer

    def _plain_user(self, data: str) -> str | None:
        """The name of the key whose token ``data`` is (compared in constant time)."""
        assert self.keys is not None
        found = None
        for key in self.keys.keys.values():
            if hmac.compare_digest(data.encode("utf-8"), key.token().encode("utf-8")):
                found = key.name
        return found

    def _refuse(self, conn: Any, why: str, message: str) -> None:
        host, _ = _peer(conn)
        # The handshake thread sends the refusal after this delay (a timer, not a sleep).
        conn._pyroinst_delay = self.failures.failed(host, why)
        raise AuthenticationFailed(message)

    def finish(self, conn: Any, challenge: _Challenge) -> None:
        """Receive a connection's first message after the handshake: the client's proof.

        Answers it with the server's proof, or refuses it (a CONNECTFAIL, which the
        handshake thread sends after the failure delay it finds in ``_pyroinst_delay``,
        then Pyro5's SecurityError, which ends the connection).
        """
        try:
            msg = self._receive_small(conn)
        except Pyro5.errors.SecurityError:
            raise
        except (Pyro5.errors.CommunicationError, ValueError, OSError) as exc:
            if isinstance(exc, Pyro5.errors.ConnectionClosedError):
                raise  # the client went away
            # Garbage or nothing in time instead of a proof: noted, the connection ends.
            self.failures.summary.note(challenge.host, f"no proof: {exc}")
            raise Pyro5.errors.SecurityError(f"no proof from {challenge.where}: {exc}") from None
        proof = (msg.annotations or {}).get(PROOF_ANNOTATION)
        if msg.type != protocol.MSG_PING:
            why = "a call before its proof"
        elif proof is None:
            why = "no proof"
        elif not hmac.compare_digest(bytes(proof), challenge.expected):
            why = "a wrong proof (another token)"
        else:
            del conn._pyroinst_challenge
            conn._pyroinst_proven = True
            conn._pyroinst_user = challenge.user
            self.failures.succeeded(challenge.host)
            reply = protocol.SendingMessage(
                protocol.MSG_PING,
                0,
                msg.seq,
                msg.serializer_id,
                b"proven",
                annotations={PROOF_ANNOTATION: challenge.answer},
            )
            conn.send(reply.data)
            return
        conn._pyroinst_delay = self.failures.failed(challenge.host, why)
        conn.send(_connect_fail(msg.seq, msg.serializer_id, _NEEDS_TOKEN))
        raise Pyro5.errors.SecurityError(f"{why} from {challenge.where}")

    @staticmethod
    def _receive_small(conn: Any) -> protocol.ReceivingMessage:
        """One message of at most UNPROVEN_MAX bytes (SecurityError if larger)."""
        header = conn.recv(6)
        protocol.ReceivingMessage.validate(header)
        header += conn.recv(protocol._header_size - 6)
        msg = protocol.ReceivingMessage(header)
        size = msg.annotations_size + msg.data_size
        if size > UNPROVEN_MAX:
            _, where = _peer(conn)
            raise Pyro5.errors.SecurityError(
                f"a message of {size} bytes before the proof, from {where}"
            )
        msg.add_payload(conn.recv(size))
        return msg


class AuthDaemon:
    """Mixin for Pyro5 daemons: the server's side of the protocol (``self._pyroinst_auth``,
    a ServerAuth; without one, every client is taken)."""

    _pyroinst_auth: ServerAuth | None = None

    def validateHandshake(self, conn: Any, data: Any) -> Any:  # noqa: N802 - Pyro5's name
        auth = self._pyroinst_auth
        if auth is None:
            conn._pyroinst_proven = True
            return {"pyroinst": 1, "max_message_size": pyro_config.MAX_MESSAGE_SIZE}
        return auth.answer(conn, data)

    def handleRequest(self, conn: Any) -> Any:  # noqa: N802 - Pyro5's name
        """Pyro5's handleRequest, except that a connection's first message after a
        challenge must be the client's proof."""
        challenge = getattr(conn, "_pyroinst_challenge", None)
        if challenge is not None:
            assert self._pyroinst_auth is not None
            return self._pyroinst_auth.finish(conn, challenge)
        return super().handleRequest(conn)  # type: ignore[misc]


_NEEDS_TOKEN = (
    "authentication failed: this server needs the lab's token (set PYROINST_TOKEN, or "
    "--token-file). A plain Pyro5 script sets proxy._pyroHandshake = token, which the "
    "server takes only with accept_plain_token = true"
)
_NEEDS_TLS = (
    "authentication failed: this server takes the lab's token over TLS only, and this "
    "connection has none (something between client and server removed it?)"
)
_OLD_CLIENT = (
    "authentication failed: this client speaks another version of pyroinst's token "
    "protocol: install the same pyroinst version on clients and servers"
)
_NO_PLAIN = (
    "authentication failed: this server does not take the lab's token sent as plain "
    "text (proxy._pyroHandshake = token): connect through pyroinst (import pyroinst; it "
    "proves the token without sending it), or ask the server's admin for "
    "accept_plain_token = true"
)

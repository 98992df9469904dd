"""The lab's token: clients and servers prove to each other that they know it, never send it,
over TLS, with both proofs bound to the server's certificate.

Where the token comes from (an argument, a token file, ``PYROINST_TOKEN``):
``pyroinst.tokens``. A token is a shared secret or one person's named key
(``pyroinst.keys``).

Protocol (pyroinst-auth 2), inside Pyro5's connection handshake plus one message:

0. The client opens TLS. Without a lab CA it checks no chain of trust; it takes the
   server certificate's channel binding ``CB`` (``tls-server-end-point``, RFC 5929; see
   ``pyroinst.identity``). The server knows ``CB`` of its own certificate.
1. Client -> server, ``CONNECT``: the handshake data is ``{"pyroinst_auth": 2, "nonce":
   Nc, "key": NAME}``, Nc 32 fresh random bytes (64 hex digits), NAME the key's name.
2. Server -> client, ``CONNECTOK``: the handshake answer holds ``"nonce": Ns`` (32 fresh
   random bytes). A server refuses a nonce it has seen recently (a replayed ``CONNECT``),
   a key name it does not have, and a challenge on a connection without TLS.
3. Client -> server, the connection's first message: a Pyro5 ``PING`` whose annotation
   ``PIAU`` is ``HMAC-SHA256(K, "pyroinst-auth-2 client" + Nc + Ns + CB)``.
4. Server -> client: compares it in constant time. Right: the ``PING`` answer carries
   ``PIAU = HMAC-SHA256(K, "pyroinst-auth-2 server" + Nc + Ns + CB)``, which the client
   checks before it lets the connection carry anything else. Wrong or missing: a
   ``CONNECTFAIL`` saying why, after a delay that grows with the failures from that
   address, and the connection is closed.

``K`` is the key derived from the secret (``pyroinst.keys``: PBKDF2, a salt with the
key's name and lab id). What this gives:

* an eavesdropper sees TLS only;
* a relay that ends TLS itself shows the client its own certificate: the client's proof
  is bound to that certificate, which the real server refuses, and the relay cannot make
  the server's proof for it: both sides end the connection, nothing is called;
* a relay that forwards the TLS bytes can neither read nor inject nor change them
  (TLS's integrity); a byte it changes ends the connection;
* a recording is worthless later: the server picks a new Ns for every connection.

Until step 4, the server takes no call on the connection; a proof on any later message
ends it too. A client proves itself before the server does, so only a server the client
chose to connect to ever sees a proof; the client sends no call to a server that did not
prove itself.

What a client sees:

* a server without the challenge (a plain Pyro5 daemon, a pyroinst server without a
  token): ``AuthenticationFailed``, "could not prove it belongs to the lab";
* a server with another token, or a client without one: ``AuthenticationFailed``,
  "authentication failed: ... needs the lab's token".

In a process that imported pyroinst, every Pyro5 proxy with the default handshake takes
part (``Pyro5.api.Proxy`` and ``PYRONAME:`` lookups included). A proxy to a server
outside the lab opts out with ``pyroinst.auth.outside_lab(proxy)``.

The server's half lives in ``pyroinst.authserver``.

Plain Pyro5 scripts (without pyroinst) can only send the token itself, as
``proxy._pyroHandshake = token``, without TLS. Servers refuse that unless they run with
``accept_plain_token`` (then they log, once per client address, that they accepted one):
anyone who records such a connection has the token, and a relay can change its traffic.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import socket
import ssl
import threading
from socket import timeout as socket_timeout
from typing import Any

import Pyro5.api
import Pyro5.client
import Pyro5.core
import Pyro5.errors
from Pyro5 import protocol, serializers, socketutil

from . import compat, identity
from .errors import AuthenticationFailed, ConfigurationError
from .keys import Key, parse_token
from .tokens import (  # where the token comes from: offered here as before
    current_token,
    outside_lab,
    own_token,
    proxy_token,
    read_token_file,
    resolve_keys,
    resolve_token,
    set_token,
    token_problem,
    use_token,
)

__all__ = [
    "set_token",
    "current_token",
    "read_token_file",
    "resolve_token",
    "resolve_keys",
    "broadcast_allowed",
    "own_token",
    "use_token",
    "outside_lab",
    "client_proof",
    "server_proof",
    "PROOF_ANNOTATION",
    "install",
    "enabled",
]

log = logging.getLogger(__name__)

_DEFAULT_HANDSHAKE = "hello"  # what Pyro5 proxies send when nobody set a handshake
#: The annotation that carries a proof (step 3 and 4 of the protocol).
PROOF_ANNOTATION = "PIAU"
NONCE_BYTES = 32
VERSION = 2


def _proof(key: bytes, role: bytes, client_nonce: bytes, server_nonce: bytes, cb: bytes) -> bytes:
    message = b"pyroinst-auth-%d %s" % (VERSION, role) + client_nonce + server_nonce + cb
    return hmac.new(key, message, hashlib.sha256).digest()


def client_proof(key: bytes, client_nonce: bytes, server_nonce: bytes, cb: bytes) -> bytes:
    """What a client sends to show it knows the key (step 3), bound to the certificate."""
    return _proof(key, b"client", client_nonce, server_nonce, cb)


def server_proof(key: bytes, client_nonce: bytes, server_nonce: bytes, cb: bytes) -> bytes:
    """What a server answers to show it knows the key (step 4), bound to its certificate."""
    return _proof(key, b"server", client_nonce, server_nonce, cb)


def _nonce(value: Any) -> bytes | None:
    """The nonce in a handshake field (64 hex digits), or None if it is not one."""
    if not isinstance(value, str) or len(value) != 2 * NONCE_BYTES:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _peer(connection: Any) -> tuple[str, str]:
    """(host, host:port) of the other end of a Pyro5 connection."""
    try:
        address = connection.sock.getpeername()
        return str(address[0]), f"{address[0]}:{address[1]}"
    except (AttributeError, OSError, TypeError, IndexError):
        return "?", "?"


def _loads(serializer_id: int, data: Any) -> Any:
    try:
        return serializers.serializers_by_id[serializer_id].loads(data)
    except Exception:  # noqa: BLE001 - a malformed answer is "no answer"
        return None


def _connect_fail(seq: int, serializer_id: int, reason: str) -> bytes:
    serializer = serializers.serializers_by_id.get(serializer_id)
    if serializer is None:
        serializer = serializers.serializers_by_id[serializers.JsonSerializer.serializer_id]
    message = protocol.SendingMessage(
        protocol.MSG_CONNECTFAIL, 0, seq, serializer.serializer_id, serializer.dumps(reason)
    )
    return bytes(message.data)


# -- client side -------------------------------------------------------------------------------
_tls = threading.local()


def _handshake_token(proxy: Any) -> str | None:
    """The token ``proxy`` proves when it connects, or None to connect like plain Pyro5."""
    if proxy._pyroHandshake != _DEFAULT_HANDSHAKE:
        return None
    return proxy_token(proxy)


def _prove_to_server(
    connection: Any, connect_ok: Any, key: bytes, client_nonce: bytes, cb: bytes | None
) -> None:
    """Steps 3 and 4, client side, on a connection that just got its CONNECTOK."""
    _, where = _peer(connection)
    if cb is None:
        raise AuthenticationFailed(
            f"the connection to {where} has no TLS to bind the proof to: nothing was sent",
            address=where,
            reason="unproven",
        )
    answer = _loads(connect_ok.serializer_id, connect_ok.data)
    handshake = answer.get("handshake") if isinstance(answer, dict) else None
    server_nonce = _nonce(handshake.get("nonce")) if isinstance(handshake, dict) else None
    if server_nonce is None or server_nonce == client_nonce:
        if isinstance(handshake, dict) and handshake.get("pyroinst") and "nonce" not in handshake:
            what = "it is a pyroinst server running without a token: give it the lab's token too"
        else:
            what = "it answered without the lab's challenge (a plain Pyro5 server?)"
        raise AuthenticationFailed(
            f"the server at {where} could not prove it belongs to the lab: {what}. Nothing "
            "was sent to it; the token never is.",
            address=where,
            reason="unproven",
        )
    ping = protocol.SendingMessage(
        protocol.MSG_PING,
        0,
        0,
        connect_ok.serializer_id,
        b"proof",
        annotations={PROOF_ANNOTATION: client_proof(key, client_nonce, server_nonce, cb)},
    )
    connection.send(ping.data)
    reply = _original_recv(connection, [protocol.MSG_PING, protocol.MSG_CONNECTFAIL])
    if reply.type == protocol.MSG_CONNECTFAIL:
        reason = _loads(reply.serializer_id, reply.data)
        if isinstance(reason, str) and reason.startswith("server busy"):
            from .errors import ServerBusy

            raise ServerBusy(f"the server at {where} refused the connection: {reason}")
        # (Its own words are for clients without a token: this one proved one.)
        problem = token_problem(
            f"the server at {where}", _proving_token(), reason if isinstance(reason, str) else None
        )
        if _proving_token():
            problem += (
                "; or something between this client and the server ended TLS and showed a "
                "certificate of its own, which the proof is bound to (a man in the middle)"
            )
        raise AuthenticationFailed(problem, address=where, reason="refused")
    proof = (reply.annotations or {}).get(PROOF_ANNOTATION)
    expected = server_proof(key, client_nonce, server_nonce, cb)
    if proof is None or not hmac.compare_digest(bytes(proof), expected):
        raise AuthenticationFailed(
            f"the server at {where} could not prove it belongs to the lab: its proof of "
            "the lab's token is wrong (it has another token, or none, or something between "
            "this client and it ended the TLS connection and showed its own certificate). "
            "Nothing but this client's proof was sent to it; the token never is.",
            address=where,
            reason="unproven",
        )


def recv_stub(connection: Any, accepted_msgtypes: Any = None) -> protocol.ReceivingMessage:
    """Pyro5's recv_stub, plus the client's half of the protocol when a CONNECTOK arrives
    on a connection that started it, and the refusal of a second proof on a server's."""
    msg = _original_recv(connection, accepted_msgtypes)
    if msg.type == protocol.MSG_CONNECTOK:
        pending = getattr(_tls, "pending", None)
        if pending is not None:
            _tls.pending = None
            key, client_nonce = pending
            _prove_to_server(connection, msg, key, client_nonce, _binding_of(connection.sock))
    elif (
        msg.annotations
        and PROOF_ANNOTATION in msg.annotations
        and getattr(connection, "_pyroinst_proven", False)
    ):
        _refuse_late_proof(connection, msg)
    return msg


def _refuse_late_proof(conn: Any, msg: Any) -> None:
    """A proof on an already proven connection (server side): refused, the connection ends."""
    _, where = _peer(conn)
    log.warning("a second proof of the token from %s: connection closed", where)
    error = Pyro5.errors.SecurityError(
        "refused: this connection already proved the lab's token; a second proof ends it"
    )
    serializer = serializers.serializers_by_id.get(msg.serializer_id)
    if serializer is not None and msg.type == protocol.MSG_INVOKE:
        reply = protocol.SendingMessage(
            protocol.MSG_RESULT,
            protocol.FLAGS_EXCEPTION,
            msg.seq,
            serializer.serializer_id,
            serializer.dumps(error),
        )
        conn.send(reply.data)
    raise error


def _proving_token() -> str | None:
    return getattr(_tls, "token", None)


def broadcast_allowed(token: str | None = None) -> bool:
    """Whether a name server may be looked for by UDP broadcast: not with the lab's token
    (anyone can answer one), unless PYROINST_NS_BROADCAST=1 asks for it."""
    if not (token or current_token()):
        return True
    return os.environ.get("PYROINST_NS_BROADCAST", "").strip().lower() in ("1", "yes", "true")


def _locate_ns(*args: Any, **kwargs: Any) -> Any:
    """Pyro5's locate_ns, except that a name server refusing this client's token is
    AuthenticationFailed saying so, not NamingError "Failed to locate the nameserver",
    and that with the lab's token there is no broadcast unless asked for."""
    host = args[0] if args else kwargs.get("host", "")
    if not host and not broadcast_allowed():
        kwargs["broadcast"] = False
        args = args[:2]
    try:
        return _original_locate_ns(*args, **kwargs)
    except Pyro5.errors.NamingError as exc:
        cause = exc.__cause__
        if isinstance(cause, AuthenticationFailed):
            raise AuthenticationFailed(
                f"the name server: {cause}",
                address=getattr(cause, "address", None),
                reason=getattr(cause, "reason", "refused"),
            ) from None
        if isinstance(cause, Pyro5.errors.CommunicationError) and "authentication failed" in str(
            cause
        ):
            raise AuthenticationFailed(
                f"{token_problem('the name server', None, str(cause))} ({cause})",
                reason="refused",
            ) from None
        raise


def _binding_of(sock: Any) -> bytes | None:
    """The channel binding of the server certificate ``sock`` (a TLS socket) saw."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    return identity.binding(der) if der else None


def _create_socket(*args: Any, **kwargs: Any) -> Any:
    """Pyro5's create_socket; a connecting socket of a proxy that proves the token gets
    TLS (without a lab CA: no chain check, the proof binds the certificate)."""
    sock = _original_create_socket(*args, **kwargs)
    if not getattr(_tls, "secure", False) or kwargs.get("connect") is None:
        return sock
    if isinstance(sock, ssl.SSLSocket):
        return sock  # the lab CA's TLS (configure_tls), checked by Pyro5
    where = kwargs["connect"]
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small TLS records
        return identity.client_context().wrap_socket(sock)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        text = f"{where[0]}:{where[1]}" if isinstance(where, tuple) else str(where)
        if isinstance(exc, TimeoutError | socket_timeout):
            raise Pyro5.errors.TimeoutError(f"TLS with {text} timed out") from None
        raise AuthenticationFailed(
            f"the server at {text} could not prove it belongs to the lab: it closed the "
            f"TLS connection a client with the lab's token starts ({exc}). It runs without "
            "a token (give it the lab's token too), it is not a pyroinst server, or it is "
            "too busy to answer. Nothing was sent to it.",
            address=text,
            reason="unproven",
        ) from None


def _create_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
    if self._pyroConnection is not None:
        return _original_create(self, *args, **kwargs)
    token = _handshake_token(self)
    if token is None:
        return _original_create(self, *args, **kwargs)
    key: Key = parse_token(token)
    client_nonce = secrets.token_bytes(NONCE_BYTES)
    self._pyroHandshake = {"pyroinst_auth": VERSION, "nonce": client_nonce.hex(), "key": key.name}
    saved = (
        getattr(_tls, "pending", None),
        getattr(_tls, "token", None),
        getattr(_tls, "secure", False),
    )
    _tls.pending = (key.derived, client_nonce)
    _tls.token = token
    _tls.secure = True
    try:
        return _original_create(self, *args, **kwargs)
    finally:
        # A nested connect (a PYRONAME lookup) restores what it found.
        _tls.pending, _tls.token, _tls.secure = saved
        self._pyroHandshake = _DEFAULT_HANDSHAKE


# -- installing --------------------------------------------------------------------------------
_installed = False
_original_locate_ns: Any = Pyro5.core.locate_ns
_original_recv: Any = protocol.recv_stub
_original_create_socket: Any = socketutil.create_socket
# Name-mangled: Proxy.__pyroCreateConnection, which every connect goes through.
_original_create: Any = Pyro5.client.Proxy._Proxy__pyroCreateConnection  # type: ignore[attr-defined]


def enabled() -> bool:
    """True when proxies of this process can prove the token (see ``install``)."""
    return _installed


def require_client_side(token: str | None) -> None:
    """ConfigurationError if ``token`` is set but this Pyro5 cannot carry the proof."""
    if token and not _installed:
        low, high = compat.PYRO5_TESTED
        raise ConfigurationError(
            f"the lab's token needs a Pyro5 version pyroinst is tested with ({low} to "
            f"{high}); this is Pyro5 {compat.pyro5_version()}. Install one: "
            f"pip install 'Pyro5>={low},<={high}'"
        )


def install() -> None:
    """Make every Pyro5 proxy of this process take part in the protocol (idempotent).

    Only with a tested Pyro5 version: the client's half lives in Pyro5 internals. Call it
    after ``fastwire.install()``; it wraps what that put in.
    """
    global _installed, _original_recv, _original_create, _original_locate_ns
    global _original_create_socket
    if _installed or not compat.pyro5_tested():
        return
    _original_create_socket = socketutil.create_socket
    socketutil.create_socket = _create_socket  # acts only inside a proving proxy's connect
    _original_locate_ns = Pyro5.core.locate_ns
    Pyro5.core.locate_ns = _locate_ns  # what PYRONAME: resolution calls
    Pyro5.api.locate_ns = _locate_ns
    _original_recv = protocol.recv_stub
    _original_create = Pyro5.client.Proxy._Proxy__pyroCreateConnection  # type: ignore[attr-defined]
    protocol.recv_stub = recv_stub
    Pyro5.client.Proxy._Proxy__pyroCreateConnection = _create_connection  # type: ignore[attr-defined]
    _installed = True

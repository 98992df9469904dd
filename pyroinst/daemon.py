"""The Pyro5 daemons pyroinst serves with, and the settings that guard their connections.

``DeviceDaemon`` serves devices (used by ``InstServer``); ``secure()`` gives it, and the
name server's daemon, the lab's token protocol (``auth``) and the connection limits
(``admission``). ``is_live`` tells whether a URI's server still answers.

Oneway calls: Pyro5 runs every call flagged ONEWAY in a new thread of its own, so a
client can make a server start thousands of threads. On pyroinst's daemons (``install``)
a oneway call runs in the worker of the connection it came on, in order with that
connection's other calls: the client still does not wait for it, and the server never
runs more threads than its ``threadpool_size``. A oneway call of a long method delays
the next call on the same proxy; run long methods as jobs. Other daemons in the process
keep Pyro5's behaviour.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import Pyro5.client
import Pyro5.errors
import Pyro5.server
from Pyro5 import config as pyro_config

from . import compat, identity
from .admission import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_HOST,
    AdmissionDaemon,
    FailureTracker,
)
from .authserver import AuthDaemon, ServerAuth
from .dispatch import DispatchDaemon
from .errors import AuthenticationFailed, ConfigurationError
from .fastwire import FastwireDaemon
from .handshakes import DEFAULT_MAX_PENDING_HANDSHAKES
from .keys import KeyRing, warn_if_weak
from .tokens import use_token

__all__ = ["Guarding", "DeviceDaemon", "secure", "is_live", "holder", "LIVENESS_TIMEOUT"]

log = logging.getLogger(__name__)

#: Seconds an old registration's owner gets to answer before it counts as dead.
LIVENESS_TIMEOUT = 2.0


@dataclass
class Guarding:
    """How a daemon guards its connections (see ``auth`` and ``admission``).

    ``token``: the token this process proves when it connects (None: none);
    ``keys``: the keys clients may prove (a ``pyroinst.keys.KeyRing``; default: the one
    key ``token`` names; None and no token: every client is taken);
    ``accept_plain_token``: also take a token sent as plain text by plain Pyro5 scripts;
    ``handshake_timeout``: seconds a new connection gets to complete its handshake;
    ``max_connections_per_host``: connections one client address may hold;
    ``max_pending_handshakes``: connections that may be in their handshake at once (see
    ``pyroinst.handshakes``).
    """

    token: str | None = None
    accept_plain_token: bool = False
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    max_connections_per_host: int = DEFAULT_MAX_CONNECTIONS_PER_HOST
    max_pending_handshakes: int = DEFAULT_MAX_PENDING_HANDSHAKES
    keys: KeyRing | None = None

    def __post_init__(self) -> None:
        if self.keys is None and self.token:
            self.keys = KeyRing.single(self.token)
        try:
            timeout = float(self.handshake_timeout)
        except (TypeError, ValueError):
            timeout = 0.0
        if not 0 < timeout <= 3600:
            raise ConfigurationError(
                f"handshake_timeout={self.handshake_timeout!r} is not usable: give seconds "
                "between 0 and 3600 (default 5)"
            )
        self.handshake_timeout = timeout
        limit = self.max_connections_per_host
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(
                f"max_connections_per_host={limit!r} is not usable: give a whole number of "
                "at least 1 (default 64)"
            )
        pending = self.max_pending_handshakes
        if isinstance(pending, bool) or not isinstance(pending, int) or pending < 1:
            raise ConfigurationError(
                f"max_pending_handshakes={pending!r} is not usable: give a whole number of "
                "at least 1 (default 256)"
            )
        self.accept_plain_token = bool(self.accept_plain_token)


def server_tls(keys: KeyRing | None) -> tuple[ssl.SSLContext | None, bytes]:
    """The TLS context a daemon's connections start (None where Pyro5's lab-CA TLS or no
    token leaves it to Pyro5) and the channel binding of its certificate."""
    if keys is None:
        return None, b""
    if pyro_config.SSL:
        own = identity.identity_from_files(
            pyro_config.SSL_SERVERCERT, pyro_config.SSL_SERVERKEY or None
        )
        return None, own.binding
    own = identity.server_identity()
    return own.context, own.binding


def secure(daemon: Any, guarding: Guarding) -> None:
    """Give ``daemon`` (an AuthDaemon and AdmissionDaemon) the token protocol and limits."""
    if guarding.keys is not None:
        warn_if_weak(guarding.keys)
    tls, binding = server_tls(guarding.keys)
    daemon._pyroinst_auth = ServerAuth(
        guarding.keys, guarding.accept_plain_token, FailureTracker(), binding
    )
    daemon.guard_connections(
        guarding.max_connections_per_host,
        guarding.handshake_timeout,
        guarding.max_pending_handshakes,
        tls,
    )


def _start_oneway(self: Any) -> None:
    """``start`` of Pyro5's oneway call thread: in the calling worker for pyroinst's
    daemons, a thread of its own for every other daemon (Pyro5's way)."""
    if getattr(self.pyro_daemon, "_pyroinst_inline_oneway", False):
        self._methodcall()
    else:
        threading.Thread.start(self)


_installed = False


def install() -> None:
    """Bound oneway calls on pyroinst's daemons (see the module docstring); idempotent.

    Only with a tested Pyro5 version: ``_OnewayCallThread`` is a Pyro5 internal. Its
    ``start`` is replaced in place (the class refers to itself by name in ``super()``).
    """
    global _installed
    if _installed or not compat.pyro5_tested():
        return
    Pyro5.server._OnewayCallThread.start = _start_oneway  # type: ignore[attr-defined]
    _installed = True


class DeviceDaemon(
    DispatchDaemon, FastwireDaemon, AdmissionDaemon, AuthDaemon, Pyro5.server.Daemon
):
    """Pyro5's daemon with plain calls on a short path (``pyroinst.dispatch``), the lab's
    token protocol and connection limits (``secure``),
    keeping nothing of a request once it is answered, and closing its clients'
    connections when it stops (Pyro5 leaves them to the old daemon, which no longer
    knows any device: clients would get "unknown object" instead of reconnecting)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pyroinst_connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def _handshake(self, conn: Any, denied_reason: Any = None) -> Any:
        accepted = super()._handshake(conn, denied_reason)
        if accepted:
            self._pyroinst_connections.add(conn)
        return accepted

    def close_connections(self) -> None:
        """End every client connection: clients see it closed and connect afresh."""
        for conn in list(self._pyroinst_connections):
            with contextlib.suppress(OSError, AttributeError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the worker waiting on it


def is_live(uri: str, timeout: float = LIVENESS_TIMEOUT) -> bool:
    """True if a daemon answers at ``uri`` and still serves that object."""
    return holder(uri, timeout=timeout)[0]


def holder(
    uri: str,
    token: str | None = None,
    own_binding: bytes | None = None,
    timeout: float = LIVENESS_TIMEOUT,
) -> tuple[bool, str]:
    """Whether the server at ``uri`` holds its name rightly, and why not.

    Without ``token``: whether it answers (a server that turns us down is alive). With
    the lab's ``token``: only a server that proves the token counts; one that cannot
    (another token, none, an impostor) does not; nor does one that shows this server's
    own certificate (``own_binding``) from another host: a relay of this very server.
    """
    proxy = Pyro5.client.Proxy(uri)
    proxy._pyroTimeout = timeout
    if token is not None:
        use_token(proxy, token)
    try:
        proxy._pyroBind()
        sock = getattr(proxy._pyroConnection, "sock", None)
        if token is not None and own_binding and isinstance(sock, ssl.SSLSocket):
            seen = sock.getpeercert(binary_form=True)
            ours = {a[4][0] for a in _own_addresses()}
            if seen and identity.binding(seen) == own_binding and proxy._pyroUri.host not in ours:
                return False, "shows this server's own certificate from another host (a relay)"
    except AuthenticationFailed as exc:
        if token is not None:
            return False, f"cannot prove it belongs to the lab ({exc})"
        # Refused us (another token): a lab server, alive. Not proven: not a lab server.
        alive = getattr(exc, "reason", "") == "refused"
        return alive, "" if alive else str(exc)
    except Pyro5.errors.PyroError as exc:
        text = str(exc)
        if "rejected" in text and "unknown object" not in text:
            return True, ""  # a server answered and turned us down (busy): alive
        # refused, timed out, or another daemon on that port (no such object): stale
        return False, text or type(exc).__name__
    finally:
        proxy._pyroRelease()
    return True, ""


def _own_addresses() -> list:
    try:
        return socket.getaddrinfo(socket.gethostname(), None) + socket.getaddrinfo(
            "localhost", None
        )
    except OSError:
        return []

"""The lab's shared-secret token: who may connect to device servers and name servers.

Where the token comes from (first found): an explicit argument (``InstServer(token=)``,
``EmbeddedNameServer(token=)``, ``set_token()``), a token file (``token_file`` in the lab
file, ``--token-file``), the ``PYROINST_TOKEN`` environment variable. With a token, a
server refuses every connection whose Pyro5 handshake does not carry it (compared in
constant time); the client sees "authentication failed". Without TLS the token crosses
the network in clear text: use it together with TLS on shared networks.

In a process that imported pyroinst, every Pyro5 proxy created carries the current token
in its handshake, plain ``Pyro5.api.Proxy`` objects and ``PYRONAME:`` lookups included.
A script without pyroinst sets ``proxy._pyroHandshake = token`` on each proxy.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

import Pyro5.client
from Pyro5 import config as pyro_config

from .errors import AuthenticationFailed, ConfigurationError

__all__ = ["set_token", "current_token", "read_token_file", "resolve_token", "check_token"]

_token: str | None = os.environ.get("PYROINST_TOKEN") or None
_DEFAULT_HANDSHAKE = "hello"  # what Pyro5 proxies send when nobody set a handshake


def read_token_file(path: str | Path) -> str:
    """The token in ``path`` (surrounding white space removed); ConfigurationError if unusable."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the token file {str(path)!r}: {exc.strerror}"
        ) from None
    if not token:
        raise ConfigurationError(f"the token file {str(path)!r} is empty")
    return token


def resolve_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """An explicit token, else the token file's, else the process's (PYROINST_TOKEN)."""
    if token:
        return token
    if token_file:
        return read_token_file(token_file)
    return _token


def set_token(token: str | None) -> None:
    """Use ``token`` for the proxies this process creates from now on (None: none)."""
    global _token
    _token = token or None


def current_token() -> str | None:
    """The token new proxies carry."""
    return _token


def check_token(expected: str | None, presented: Any) -> None:
    """Raise AuthenticationFailed unless ``presented`` is ``expected`` (constant time)."""
    if expected is None:
        return
    given = presented if isinstance(presented, str) else ""
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise AuthenticationFailed(
            "authentication failed: this server needs the lab's token (set PYROINST_TOKEN, "
            "or --token-file; a plain Pyro5 proxy sets proxy._pyroHandshake = token)"
        )


class TokenCheckingDaemon:
    """Mixin for Pyro5 daemons: refuse handshakes without the token; tell the limits."""

    _pyroinst_token: str | None = None

    def validateHandshake(self, conn: Any, data: Any) -> Any:  # noqa: N802 - Pyro5's name
        check_token(self._pyroinst_token, data)
        # What a pyroinst client learns about this server (plain Pyro5 clients ignore it).
        return {"pyroinst": 1, "max_message_size": pyro_config.MAX_MESSAGE_SIZE}


_installed = False
_original_init = Pyro5.client.Proxy.__init__


def _proxy_init(self: Any, uri: Any, connected_socket: Any = None) -> None:
    _original_init(self, uri, connected_socket)
    if _token is not None and self._pyroHandshake == _DEFAULT_HANDSHAKE:
        self._pyroHandshake = _token


def install() -> None:
    """Make every new Pyro5 proxy of this process carry the current token (idempotent)."""
    global _installed
    if not _installed:
        Pyro5.client.Proxy.__init__ = _proxy_init
        _installed = True

"""The lab's token on this side: where it comes from, and which one a proxy proves.

Where the token comes from (first found): an explicit argument (``InstServer(token=)``,
``EmbeddedNameServer(token=)``, ``set_token()``), a token file (``token_file`` in the lab
file, ``--token-file``), the ``PYROINST_TOKEN`` environment variable. A token is a shared
secret or one person's named key (``pyroinst.keys``). What is done with it:
``pyroinst.auth`` (the protocol, clients) and ``pyroinst.authserver`` (servers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .keys import KeyRing, parse_token, read_key_file

__all__ = [
    "set_token",
    "current_token",
    "read_token_file",
    "resolve_token",
    "resolve_keys",
    "own_token",
    "use_token",
    "outside_lab",
    "token_problem",
    "proxy_token",
]

_token: str | None = os.environ.get("PYROINST_TOKEN") or None
_OUTSIDE = "_pyroinst_outside_lab"
_PROXY_TOKEN = "_pyroinst_token"


def read_token_file(path: str | Path) -> str:
    """The token a process proves from the key file ``path`` (its one key, or the key
    named ``server``); ConfigurationError if unusable."""
    token = own_token(read_key_file(path))
    assert token is not None  # a ring read from a file is never None
    return token


def resolve_keys(token: str | None = None, token_file: str | Path | None = None) -> KeyRing | None:
    """The keys a server takes: an explicit token, else the token file's keys, else the
    process's token (PYROINST_TOKEN); None without any. The ring's own key is the
    explicit token where one is given."""
    if token:
        return KeyRing.single(token)
    if token_file:
        ring = read_key_file(token_file)
        if ring.own is None and _token:
            ring.own = parse_token(_token)
        return ring
    return KeyRing.single(_token) if _token else None


def own_token(keys: KeyRing | None) -> str | None:
    """The token a server with ``keys`` proves when it connects (ConfigurationError when
    its key file names none)."""
    if keys is None:
        return None
    token = keys.own_token()
    if token is None:
        raise ConfigurationError(
            f"the token file {keys.where!r} holds several keys and none named 'server': add "
            f"one (pyroinst token new --name server --key-file {keys.where}), or give this "
            "process its own token (PYROINST_TOKEN)"
        )
    return token


def resolve_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """An explicit token, else the token file's, else the process's (PYROINST_TOKEN)."""
    if token:
        return token
    if token_file:
        return read_token_file(token_file)
    return _token


def set_token(token: str | None) -> None:
    """Use ``token`` for the connections this process makes from now on (None: none)."""
    global _token
    _token = token or None


def current_token() -> str | None:
    """The token new connections prove."""
    return _token


def use_token(proxy: Any, token: str | None) -> Any:
    """Make ``proxy`` prove ``token`` instead of the process's; returns the proxy."""
    proxy.__dict__[_PROXY_TOKEN] = token
    return proxy


def outside_lab(proxy: Any) -> Any:
    """Connect ``proxy`` like plain Pyro5 (no challenge): for servers outside the lab."""
    proxy.__dict__[_OUTSIDE] = True
    return proxy


def proxy_token(proxy: Any) -> str | None:
    """The token ``proxy`` proves: its own (``use_token``), else the process's; None for a
    proxy put outside the lab (``outside_lab``)."""
    own = proxy.__dict__
    if own.get(_OUTSIDE):
        return None
    return own.get(_PROXY_TOKEN) or _token


#: Refusals whose own words say more than "wrong token": passed on as the server said them.
_SPECIFIC = ("has no key named", "over TLS only", "another version of pyroinst")


def token_problem(who: str, token: str | None = None, said: str | None = None) -> str:
    """Why ``who`` (e.g. "the name server at lab-ns:9090") refused this client: no token
    here, a token that is not the one it has, or what the server ``said`` when that is
    more precise (an unknown key name, a connection without TLS, another version)."""
    if said and any(marker in said for marker in _SPECIFIC):
        words = said.rsplit("authentication failed: ", 1)[-1]
        return f"authentication failed: {who} refused this client: {words}"
    if not (token or _token):
        return (
            f"authentication failed: {who} needs the lab's token, and this client has none: "
            "set PYROINST_TOKEN, or give --token-file (a lab file's token_file)"
        )
    return (
        f"authentication failed: {who} refused this client's token: the token in use here "
        "(PYROINST_TOKEN or the token file) is not the one it has (a wrong or old token?)"
    )


# -- the proofs --------------------------------------------------------------------------------

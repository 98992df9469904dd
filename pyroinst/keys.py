"""The lab's keys: one shared token, or one key per person, and what each proof is keyed with.

A **token** is what a process proves (``PYROINST_TOKEN``, ``--token-file``, ``token=``):

* ``NAME@LAB:SECRET`` — a named key, as ``pyroinst token new --name NAME`` prints it:
  ``NAME`` is who proves it (the audit log's ``user``), ``LAB`` the lab's id, ``SECRET``
  256 random bits;
* anything else — a shared token, the lab's single key, named ``lab``.

A **key file** (``token_file``) holds either one shared token, or one line per key,
``NAME@LAB = SECRET`` (``#`` starts a comment). A server takes a proof made with any key
in its file and knows whose it was; a removed line (and a restart) revokes that key.
When a server itself connects (to the name server, to other servers) it proves the key
named ``server`` (``pyroinst token new --name server --key-file FILE`` adds one), or the
file's only key, or the process's own token where one is set.

The proof's key is PBKDF2-HMAC-SHA256 of the secret (100,000 rounds) with a salt that
holds the key's name and lab id: guesses precomputed for one lab or one name do not
apply to another. A random 256-bit secret needs no salt to be safe; a short or common
token is warned about when a server starts (``weakness``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError

__all__ = [
    "Key",
    "KeyRing",
    "parse_token",
    "read_key_file",
    "new_secret",
    "new_lab_id",
    "weakness",
    "warn_if_weak",
    "SHARED_NAME",
    "SERVER_NAME",
]

log = logging.getLogger(__name__)

#: The name of a shared token's key.
SHARED_NAME = "lab"
#: The key a server proves when it connects, in a file of named keys.
SERVER_NAME = "server"
ROUNDS = 100_000
_NAMED = re.compile(r"^([A-Za-z0-9_.-]{1,64})@([A-Za-z0-9_-]{1,32}):(\S{16,})$")
_LINE = re.compile(r"^([A-Za-z0-9_.-]{1,64})(?:@([A-Za-z0-9_-]{1,32}))?\s*=\s*(\S+)$")
#: Tokens a person might choose; a server given one (any case) warns at start.
_COMMON = frozenset(
    """
    password passw0rd secret token letmein welcome admin root lab laboratory physics
    science experiment instrument instruments spectrometer microscope oscilloscope
    multimeter detector laser optics vacuum cryostat magnet sample beamline synchrotron
    quantum photon electron neutron proton pyroinst pyro pyro5 changeme default test
    testing qwerty 123456 12345678 1234567890 abc123 iloveyou dragon monkey sunshine
    """.split()
)


@dataclass(frozen=True)
class Key:
    """One key: its name (who proves it), lab id and secret."""

    name: str
    lab: str
    secret: str

    @property
    def derived(self) -> bytes:
        """The HMAC key both sides derive from the secret (once per key and process)."""
        return _derive(self.secret, self.name, self.lab)

    def token(self) -> str:
        """The token string that proves this key."""
        return f"{self.name}@{self.lab}:{self.secret}" if self.lab else self.secret

    @staticmethod
    def parse_checked(token: str) -> Key:
        """The named key ``token`` is; ValueError saying what does not fit if it is not one
        (names: letters, digits, ``_.-``, 1 to 64; lab ids: letters, digits, ``_-``, 1 to 32)."""
        key = parse_token(token)
        if key.name == SHARED_NAME and not token.startswith(f"{SHARED_NAME}@"):
            raise ValueError(
                "a name may hold letters, digits, '_', '.' and '-' (1 to 64), a lab id "
                "letters, digits, '_' and '-' (1 to 32)"
            )
        return key


@functools.lru_cache(maxsize=256)
def _derive(secret: str, name: str, lab: str) -> bytes:
    salt = b"pyroinst-auth-2\0" + lab.encode() + b"\0" + name.encode()
    return hashlib.pbkdf2_hmac("sha256", secret.encode("utf-8"), salt, ROUNDS)


def parse_token(token: str) -> Key:
    """The key a token string proves (see the module docstring)."""
    token = token.strip()
    match = _NAMED.match(token)
    if match:
        return Key(match.group(1), match.group(2), match.group(3))
    return Key(SHARED_NAME, "", token)


class KeyRing:
    """The keys a server takes, by name, and the one it proves itself as a client."""

    def __init__(self, keys: dict[str, Key], own: Key | None, where: str) -> None:
        self.keys = keys
        self.own = own
        self.where = where

    @classmethod
    def single(cls, token: str, where: str = "the token") -> KeyRing:
        """A ring of one key: a token given directly, or a file holding one."""
        key = parse_token(token)
        return cls({key.name: key}, key, where)

    def get(self, name: str) -> Key | None:
        """The key named ``name``, or None."""
        return self.keys.get(name)

    def own_token(self) -> str | None:
        """The token this process proves when it connects."""
        return None if self.own is None else self.own.token()


def read_key_file(path: str | Path) -> KeyRing:
    """The keys in ``path``; ConfigurationError naming the file and line if unusable."""
    where = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the token file {where!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"the token file {where!r} is not text") from None
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not lines:
        raise ConfigurationError(f"the token file {where!r} is empty")
    if len(lines) == 1 and "=" not in lines[0][1]:
        return KeyRing.single(lines[0][1], where)
    keys: dict[str, Key] = {}
    labs = set()
    for number, line in lines:
        match = _LINE.match(line)
        if not match:
            raise ConfigurationError(
                f"{where}, line {number}: not a key line: write NAME@LAB = SECRET "
                "(pyroinst token new --name NAME prints one)"
            )
        name, lab, secret = match.group(1), match.group(2) or "", match.group(3)
        if name in keys:
            raise ConfigurationError(f"{where}, line {number}: a second key named {name!r}")
        keys[name] = Key(name, lab, secret)
        labs.add(lab)
    if len(labs) > 1:
        raise ConfigurationError(
            f"the token file {where!r} mixes lab ids {sorted(labs)}: one file, one lab"
        )
    own = keys.get(SERVER_NAME) or (next(iter(keys.values())) if len(keys) == 1 else None)
    return KeyRing(keys, own, where)


def new_secret() -> str:
    """A new secret: 256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def new_lab_id() -> str:
    """A new lab id (8 random characters)."""
    return secrets.token_hex(4)


def warn_if_weak(ring: KeyRing) -> None:
    """Log a warning for each weak key in ``ring`` (serving goes on)."""
    for key in ring.keys.values():
        why = weakness(key.secret)
        if why:
            log.warning(
                "the key %r of %s is weak: %s. Anyone who records one connection can guess "
                "it offline; make a strong one with `pyroinst token new`",
                key.name,
                ring.where,
                why,
            )


def weakness(token: str) -> str | None:
    """Why ``token`` is weak (short, or a common word), or None."""
    secret = parse_token(token).secret
    if len(secret) < 16:
        return f"it is {len(secret)} characters long (16 at least; 43 from pyroinst token new)"
    if secret.lower().rstrip("0123456789!") in _COMMON:
        return "it is a common word"
    return None

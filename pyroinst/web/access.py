"""Who may use the web server: the lab's token, as a bearer token or a browser session.

* Without a token (allowed only on a loopback address, see ``check_bind``) everyone on
  this PC may use it.
* With one, an API request carries ``Authorization: Bearer <token>``, or the session
  cookie a browser got by logging in: once through the URL ``pyroinst web`` prints
  (``/?token=...``, which sets the cookie and redirects to the bare URL, as Jupyter
  does), or through the login page.
* The cookie is ``HttpOnly`` and ``SameSite=Strict``; a request that changes something
  (any method but GET and HEAD) on a cookie must also come from the page's own origin
  (``Origin``, else ``Sec-Fetch-Site``).
* The owner that reservations see comes from the ``X-Pyroinst-Owner`` header, else from
  the name given at login.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..admission import FailureTracker
from ..errors import ConfigurationError

__all__ = [
    "Access",
    "Caller",
    "AccessRefused",
    "check_bind",
    "COOKIE",
    "OWNER_HEADER",
    "LEASE_HEADER",
]

COOKIE = "pyroinst_session"
OWNER_HEADER = "x-pyroinst-owner"
#: The secret of a reservation (``reserve`` answers it as ``lease``), for API clients.
LEASE_HEADER = "x-pyroinst-lease"
#: Seconds a browser session lasts without being used.
SESSION_IDLE = 7 * 24 * 3600.0
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def check_bind(host: str, token: str | None) -> None:
    """ConfigurationError if ``host`` is not a loopback address and there is no token."""
    if token:
        return
    name = host.strip("[]")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
        loopback = bool(addresses) and all(
            ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses
        )
    except (OSError, ValueError):
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"pyroinst web on {host} would let anyone who reaches this PC use the lab's "
            "devices: it needs the lab's token there. Set PYROINST_TOKEN or --token-file "
            "(or [server] token_file), or serve on 127.0.0.1."
        )


class AccessRefused(Exception):
    """A request without the right to be served: ``status`` (401 or 403), why, and how
    long its answer waits (``delay``: a wrong token costs the guesser)."""

    def __init__(self, status: int, message: str, delay: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.delay = delay


@dataclass
class Caller:
    """Who makes a request: ``owner`` for reservations (None if unnamed), the lease
    secret it sent (``lease``), and its browser session (``session``), if any."""

    owner: str | None
    lease: str | None = None
    session: str | None = None


class Access:
    """The token check and the browser sessions of one web server."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._sessions: dict[str, tuple[str | None, float]] = {}
        # The leases a browser session's reservations gave it, by device: the session
        # that reserved presents them; another session (another person) does not.
        self._leases: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        # Wrong tokens from one address are answered ever later, as the Pyro side does.
        self.failures = FailureTracker()

    @property
    def open(self) -> bool:
        """True when no token is needed."""
        return self.token is None

    def token_ok(self, given: str | None) -> bool:
        """True if ``given`` is the lab's token (constant time)."""
        if self.token is None:
            return True
        return given is not None and hmac.compare_digest(
            given.encode("utf-8"), self.token.encode("utf-8")
        )

    def check_token(self, given: str | None, host: str) -> float | None:
        """None if ``given`` is the lab's token; else the seconds the refusal to ``host``
        waits (none for the first few failures, then growing to 1 s; see
        ``pyroinst.admission.FailureTracker``)."""
        if self.token_ok(given):
            self.failures.succeeded(host)
            return None
        return self.failures.failed(host, "a wrong token for the web server")

    def login(self, owner: str | None = None) -> str:
        """A new session id (the cookie's value)."""
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session] = (owner or None, time.monotonic())
        return session

    def logout(self, session: str | None) -> None:
        """End a session."""
        with self._lock:
            self._sessions.pop(session or "", None)
            self._leases.pop(session or "", None)

    def lease(self, caller: Caller | None, device: str) -> str | None:
        """The lease ``caller`` presents for ``device``: the one it sent, else the one its
        session's reservation got."""
        if caller is None:
            return None
        if caller.lease:
            return caller.lease
        if caller.session:
            with self._lock:
                return self._leases.get(caller.session, {}).get(device)
        return None

    def keep_lease(self, caller: Caller | None, device: str, lease: str | None) -> None:
        """Remember (None: forget) the lease of ``caller``'s session for ``device``."""
        if caller is None or not caller.session:
            return
        with self._lock:
            if caller.session not in self._sessions:
                return
            leases = self._leases.setdefault(caller.session, {})
            if lease is None:
                leases.pop(device, None)
            elif len(leases) < 1000:
                leases[device] = lease

    def _session_owner(self, session: str | None) -> tuple[bool, str | None]:
        if not session:
            return False, None
        now = time.monotonic()
        with self._lock:
            entry = self._sessions.get(session)
            if entry is None or now - entry[1] > SESSION_IDLE:
                self._sessions.pop(session, None)
                return False, None
            self._sessions[session] = (entry[0], now)
            return True, entry[0]

    def caller(
        self, method: str, headers: Any, cookies: dict[str, str], origin: str, host: str = "?"
    ) -> Caller:
        """Who a request comes from, or AccessRefused. ``origin`` is the server's own
        ``scheme://host[:port]`` as the request addressed it; ``host`` the client's
        address."""
        owner = headers.get(OWNER_HEADER) or None
        lease = headers.get(LEASE_HEADER) or None
        session = cookies.get(COOKIE)
        has_session, session_owner = self._session_owner(session)
        authorization = headers.get("authorization") or ""
        if authorization:
            scheme, _, given = authorization.partition(" ")
            delay = self.check_token(given.strip() if scheme.lower() == "bearer" else None, host)
            if delay is not None:
                raise AccessRefused(
                    401, "wrong token: send Authorization: Bearer <the lab's token>", delay
                )
            return Caller(owner, lease)
        if has_session:
            if method.upper() not in _SAFE and not _same_origin(headers, origin):
                raise AccessRefused(
                    403,
                    "a request that changes something must come from this page's own "
                    "origin (cross-site requests are refused)",
                )
            return Caller(owner or session_owner, lease, session)
        if self.open:
            return Caller(owner, lease)
        raise AccessRefused(
            401,
            "this needs the lab's token: send Authorization: Bearer <token>, or log in "
            "through the URL pyroinst web printed (or its login page)",
        )


def _same_origin(headers: Any, origin: str) -> bool:
    sent = headers.get("origin")
    if sent:
        return sent.rstrip("/") == origin.rstrip("/")
    return headers.get("sec-fetch-site") == "same-origin"

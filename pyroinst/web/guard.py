"""Requests that change anything come from the dashboard itself; the server answers only to
its own names.

An ASGI middleware in front of everything (token or not), deciding on the raw request
(``scope``), never on a URL rebuilt from headers:

* **Host.** A request's ``Host`` must be an address (any IP literal: a page cannot make a
  browser send one that points elsewhere), a loopback name (``localhost``...), this PC's
  host name, or a name given with ``--allow-host`` (a proxy in front). Anything else is a
  page on another site that made its own name point at this server (DNS rebinding):
  ``421`` saying so.
* **Changes.** A request other than GET/HEAD/OPTIONS from a browser must come from this
  server's own page: its ``Origin`` must be this server's origin, or, without one, its
  ``Sec-Fetch-Site`` must say ``same-origin``. A request with neither header does not
  come from a browser (curl, scripts). API requests that change something must also say
  ``Content-Type: application/json``: a page on another site cannot send that without
  the browser asking this server first (a CORS preflight, which it never allows), so a
  "simple" cross-site form or ``no-cors`` fetch is refused even where a browser would
  leave the headers out. Refusals are ``403`` saying which rule and why.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["RequestGuard", "LOOPBACK_NAMES"]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
#: Non-API routes that change something and take a form (the login page's).
_FORMS = frozenset({"/login", "/logout"})


def _host_name(value: str) -> str:
    """The host part of a ``Host`` header value (no port, no IPv6 brackets), lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.rsplit(":", 1)[0]
    return value


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _own_names() -> set[str]:
    names = set()
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
            names.add(name.lower().split(".")[0])
    return names


class RequestGuard:
    """ASGI middleware: the Host and same-origin rules of the module docstring."""

    def __init__(self, app: Any, bind_host: str = "127.0.0.1", allow_hosts: Iterable[str] = ()):
        self.app = app
        self.allowed = set(LOOPBACK_NAMES) | _own_names()
        self.allowed.update(h.strip().lower() for h in allow_hosts if h.strip())
        if bind_host and not _is_address(bind_host):
            self.allowed.add(bind_host.lower())

    def host_ok(self, host: str) -> bool:
        """True if this server answers to ``host`` (a Host header value)."""
        name = _host_name(host)
        return bool(name) and (_is_address(name) or name in self.allowed)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.host_ok(host):
            await _refuse(
                421,
                "MisdirectedRequest",
                f"this server does not answer to the host name {_host_name(host)!r}: a page "
                "on another site may have pointed that name at it (DNS rebinding). Use its "
                "address, localhost, or a name given with --allow-host.",
            )(scope, receive, send)
            return
        method = scope["method"].upper()
        path = scope["path"]
        if method not in _SAFE:
            problem = self._change_problem(headers, scope, host, path)
            if problem:
                await _refuse(403, "CrossSiteRequest", problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _change_problem(headers: dict[str, str], scope: dict, host: str, path: str) -> str:
        origin = headers.get("origin")
        own = f"{scope.get('scheme', 'http')}://{host}"
        if origin is not None:
            if origin.rstrip("/").lower() != own.lower():
                return (
                    f"a request that changes something must come from this server's own page "
                    f"({own}); this one came from {origin!r} (cross-site requests are refused)"
                )
        else:
            site = headers.get("sec-fetch-site")
            if site is not None and site not in ("same-origin", "none"):
                return (
                    "a request that changes something must come from this server's own page; "
                    f"the browser says this one is {site!r} (cross-site requests are refused)"
                )
        if path.startswith("/api/") and path not in _FORMS:
            kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return (
                    "a request that changes something must send Content-Type: "
                    f"application/json (this one sent {kind or 'none'!r}), even with an "
                    "empty body: that is what keeps other sites' pages from sending it"
                )
        return ""


def _refuse(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message}, status_code=status)

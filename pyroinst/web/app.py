"""The web server: the HTTP API (FastAPI), the dashboard page, logins.

``create_app(ns_host, ns_port, token)`` returns the ASGI application; ``pyroinst web``
serves it with uvicorn. The routes are listed in ``docs/web.md`` and in the OpenAPI
schema at ``/api/openapi.json`` (readable at ``/api/docs``).
Errors are JSON ``{"error": "<ExceptionType>", "message": "..."}`` (``ERRORS`` says which
status each type gets); no stack trace is ever sent.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import anyio
import Pyro5.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__, errors
from .access import COOKIE, Access, AccessRefused
from .api import BadRequest, ItemNotFound, JobStillRunning, MethodNotFound, router
from .feeds import MAX_STREAMS, Feeds, TooManyStreams
from .guard import RequestGuard
from .lab import Lab
from .pool import MAX_DEVICE_CONNECTIONS, WebServerBusy

__all__ = ["create_app", "ERRORS", "BODY_LIMIT"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
#: The largest request body taken (bytes); more gets 413.
BODY_LIMIT = 1 << 20

#: HTTP status per exception type (the first that matches); anything else: 500.
ERRORS: list[tuple[type[BaseException], int]] = [
    (AccessRefused, 401),
    (TooManyStreams, 429),
    (WebServerBusy, 503),
    (BadRequest, 400),
    (MethodNotFound, 404),
    (ItemNotFound, 404),
    (JobStillRunning, 409),
    (errors.JobCancelled, 409),
    (errors.SignatureError, 400),
    (errors.NotSerializableError, 400),
    (errors.DeviceNotFound, 404),
    (errors.JobNotFound, 404),
    (errors.ChannelNotFound, 404),
    (errors.DeviceBusy, 409),
    (errors.DeviceReserved, 409),
    (errors.JobTimeout, 409),
    (errors.DeviceClosed, 502),
    (errors.DeviceUnreachable, 502),
    (errors.CallTimeout, 504),
    (errors.NameServerNotFound, 502),
    (errors.ConnectionLost, 502),
    (errors.ServerBusy, 502),
    (errors.AuthenticationFailed, 502),
    (Pyro5.errors.CommunicationError, 502),
    (errors.ConfigurationError, 400),
    (LookupError, 404),
    (ValueError, 400),
    (TypeError, 400),
]


def error_response(exc: BaseException, status: int | None = None) -> JSONResponse:
    """The JSON error for ``exc``."""
    if status is None:
        status = next((code for kind, code in ERRORS if isinstance(exc, kind)), 500)
        if isinstance(exc, AccessRefused):
            status = exc.status
    name = type(exc).__name__
    remote = getattr(exc, "remote_type", None)
    if remote:
        name = str(remote).rsplit(".", 1)[-1]
    return JSONResponse({"error": name, "message": str(exc)}, status_code=status)


class _Authorize:
    """ASGI middleware: who an API request comes from (``request.state.caller``), or its
    refusal. Plain ASGI, not Starlette's BaseHTTPMiddleware, which would cancel a
    streamed response (an event stream) whose client merely stopped reading for a while.
    """

    def __init__(self, app: Any, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        # The path as the server received it: never a URL rebuilt from the Host header.
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        if path in ("/api/openapi.json", "/api/docs"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        origin = f"{scope.get('scheme', 'http')}://{request.headers.get('host', '')}"
        try:
            caller = self.access.caller(
                request.method, request.headers, request.cookies, origin, _client(request)
            )
        except AccessRefused as exc:
            if exc.delay > 0:
                await anyio.sleep(exc.delay)  # this request waits; nobody else does
            await error_response(exc, exc.status)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, read or announced."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode() or "0"
        too_large = JSONResponse(
            {
                "error": "PayloadTooLarge",
                "message": f"request body over {self.limit} bytes (the limit); send less",
            },
            status_code=413,
        )
        if length.isdigit() and int(length) > self.limit:
            await too_large(scope, receive, send)
            return
        seen = 0
        over = started = False

        async def limited() -> dict:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _TooLarge
            return message

        async def guarded(message: dict) -> None:
            nonlocal started
            if over:
                return  # the app's answer to the interrupted body (a 500): 413 instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:  # noqa: BLE001 - also groups: a body streamed in a task group
            # Otherwise answered already (JSON, by the app's handler); Starlette raises it
            # again for the server's log, which would print a stack trace: it was logged.
            pass
        if over and not started:
            await too_large(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(ns_host: str | None = None, ns_port: int | None = None, token: str | None = None,
               body_limit: int = BODY_LIMIT, bind_host: str = "127.0.0.1",
               allow_hosts: tuple[str, ...] = (), max_streams: int = MAX_STREAMS,
               max_device_connections: int = MAX_DEVICE_CONNECTIONS) -> FastAPI:  # fmt: skip
    """The web server's ASGI application, a client of the lab at ``ns_host``:``ns_port``
    (None: as every pyroinst client finds it), requiring ``token`` (None: nobody logs in),
    answering to the names ``RequestGuard`` allows (``bind_host``, ``allow_hosts``), with at
    most ``max_streams`` event streams per client and ``max_device_connections``
    connections per device server."""
    access = Access(token)
    lab = Lab(ns_host, ns_port, max_device_connections=max_device_connections)
    limiter = anyio.CapacityLimiter(64)
    feeds = Feeds(lab.pool, limiter, max_streams)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await feeds.close()
        lab.close()

    app = FastAPI(
        lifespan=lifespan,
        title="pyroinst",
        version=__version__,
        description="The lab's devices over HTTP. Errors: {error, message}.",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.access = access
    app.state.lab = lab
    app.state.limiter = limiter
    app.state.feeds = feeds
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return JSONResponse(
            {"error": "BadRequest", "message": f"the request does not fit: {problems}"},
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
            return JSONResponse({"error": "NotFound", "message": message}, status_code=404)
        name = "MethodNotAllowed" if exc.status_code == 405 else "HTTPError"
        return JSONResponse({"error": name, "message": str(exc.detail)}, exc.status_code)

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception) -> JSONResponse:
        response = error_response(exc)
        if response.status_code == 500:
            log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return response

    @app.get("/", include_in_schema=False)
    async def page(
        request: Request, token: str | None = None, owner: str | None = None
    ) -> Response:
        if token is not None:
            delay = access.check_token(token, _client(request))
            if delay is not None:
                await anyio.sleep(delay)
                return _login_page("that token is not the lab's", 401)
            response = RedirectResponse("/", status_code=303)
            _set_session(response, access.login(owner), request)
            return response
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/login", include_in_schema=False)
    async def login_form() -> HTMLResponse:
        return _login_page("", 200)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        # An urlencoded form, read by hand: multipart parsing would need another package.
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        owner = (form.get("owner") or [""])[0] or None
        delay = access.check_token(given, _client(request))
        if delay is not None:
            await anyio.sleep(delay)
            return _login_page("that token is not the lab's", 401)
        response = RedirectResponse("/", status_code=303)
        _set_session(response, access.login(owner), request)
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        access.logout(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/api/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_docs_page(app.openapi()))

    wrapped = _BodyLimit(RequestGuard(_Authorize(app, access), bind_host, allow_hosts), body_limit)
    wrapped.state = app.state  # the application's state (lab, access, limiter)
    return wrapped  # type: ignore[return-value]


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def _set_session(response: Response, session: str, request: Request) -> None:
    response.set_cookie(
        COOKIE,
        session,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _login_page(problem: str, status: int) -> HTMLResponse:
    page = (STATIC / "login.html").read_text(encoding="utf-8")
    note = f'<p class="problem">{html.escape(problem)}</p>' if problem else ""
    return HTMLResponse(page.replace("<!-- problem -->", note), status_code=status)


def _docs_page(schema: dict[str, Any]) -> str:
    """The API's routes as one HTML page, from the OpenAPI schema (works offline)."""
    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            params = ", ".join(
                f"{p['name']} ({p['in']})" for p in op.get("parameters", []) if "name" in p
            )
            rows.append(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>"
                "<td>{}</td></tr>".format(
                    method.upper(),
                    html.escape(path),
                    html.escape(op.get("summary", "")),
                    html.escape(params),
                )
                + "<tr class='doc'><td></td><td colspan='3'>{}</td></tr>".format(
                    _doc_html(op.get("description", ""))
                )
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>pyroinst API</title>"
        "<link rel='stylesheet' href='/static/app.css'></head><body class='docs'>"
        "<p><a href='/'>&larr; back to the dashboard</a></p>"
        f"<h1>pyroinst HTTP API {html.escape(schema.get('info', {}).get('version', ''))}</h1>"
        "<p>The schema: <a href='/api/openapi.json'>/api/openapi.json</a>. Errors are "
        '<code>{"error", "message"}</code>. With a token: <code>Authorization: Bearer '
        "&lt;token&gt;</code>; the owner for reservations: <code>X-Pyroinst-Owner</code>.</p>"
        "<table><tr><th>method</th><th>route</th><th>does</th><th>parameters</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


def _doc_html(text: str) -> str:
    """A docstring as HTML: escaped, ``code`` and `code` as <code>, paragraphs kept."""
    escaped = html.escape(text)
    escaped = re.sub(r"``(.+?)``", r"<code>\1</code>", escaped)
    escaped = re.sub(r"`([^`]+?)`", r"<code>\1</code>", escaped)
    return escaped.replace("\n\n", "<br><br>")


def login_url(host: str, port: int, token: str | None) -> str:
    """The URL that logs a browser in (``?token=``), or the bare URL without a token."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/"
    return base + ("?" + urlencode({"token": token}) if token else "")

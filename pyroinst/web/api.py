"""The HTTP API's routes (``/api/...``); the app (``app.py``) adds access and errors."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..arguments import convert_arguments
from ..errors import ChannelNotFound, JobCancelled, PyroinstError
from ..handles import JobHandle
from .feeds import Feeds
from .values import as_array, npy_chunks, npy_length, summary, to_csv, to_json

__all__ = ["router", "MethodNotFound", "BadRequest", "ItemNotFound"]

router = APIRouter(prefix="/api")

#: Reserved members a client may call through the method route.
CALLABLE_RESERVED = ("reserve", "release", "reservation", "ping")
_FORMATS = ("json", "npy", "csv")
_ACTIVE = ("queued", "running")


class MethodNotFound(PyroinstError, LookupError):
    """The device has no method of that name."""


class ItemNotFound(PyroinstError, LookupError):
    """A stream item that is not (or no longer) kept."""


class BadRequest(PyroinstError, ValueError):
    """A request body or parameter that cannot be used."""


class JobStillRunning(PyroinstError):
    """A job's result was asked for before it finished."""


def _lab(request: Request) -> Any:
    return request.app.state.lab


def _owner(request: Request) -> str | None:
    caller = getattr(request.state, "caller", None)
    return caller.owner if caller is not None else None


def _lease(request: Request, name: str) -> str | None:
    return request.app.state.access.lease(getattr(request.state, "caller", None), name)


def _device(request: Request, name: str) -> Any:
    """A proxy of ``name`` from the pool (``with _device(...) as dev``), presenting the
    caller's owner and lease."""
    return _lab(request).borrow(name, _owner(request), _lease(request, name))


@router.get("/devices", summary="Every device of every host")
def devices(request: Request) -> list[dict[str, Any]]:
    """Name, class, host, port, uri, server, ``alive`` and ``reason`` (why not), and the
    ``reservation`` (``{owner, until, remaining_s}`` or null) of every device."""
    return to_json(_lab(request).devices())


@router.get("/devices/{name}", summary="One device: describe() and its state")
def device(request: Request, name: str) -> dict[str, Any]:
    """``describe()`` (class, doc, methods with parameters, properties) plus ``jobs``
    (queued and running), ``channels`` and ``reservation``."""
    description = dict(_lab(request).describe(name))
    with _device(request, name) as dev:
        description["jobs"] = [j for j in dev.job_list() if j["state"] in _ACTIVE]
        description["channels"] = dev.channels()
        description["reservation"] = dev.reservation()
        description["values"] = _property_values(dev, description.get("properties", []))
        if any(m.get("name") == "qcodes_tree" for m in description.get("methods", [])):
            description["parameters"] = _qcodes_parameters(dev)
    return to_json(description)


#: Most QCoDeS parameters the device view reads at once.
MAX_PARAMETERS = 100


def _qcodes_parameters(dev: Any) -> list[dict[str, Any]]:
    """A served QCoDeS instrument's parameters by dotted path, with unit, label and the
    value now (see ``pyroinst.contrib.qcodes``)."""
    found: list[dict[str, Any]] = []

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for name, entry in (tree.get("parameters") or {}).items():
            found.append({"path": f"{prefix}{name}", **entry})
        for name, sub in (tree.get("submodules") or {}).items():
            if "channels" not in sub:
                walk(sub, f"{prefix}{name}.")

    walk(dev.qcodes_tree(), "")
    for entry in found[:MAX_PARAMETERS]:
        if not entry.get("gettable"):
            continue
        try:
            entry["value"] = summary(dev.qcodes_get(entry["path"]))
        except Exception as exc:  # noqa: BLE001 - shown instead of the value
            entry["value"] = {"error": type(exc).__name__, "message": str(exc)}
    return found


def _property_values(dev: Any, properties: list[dict[str, Any]]) -> dict[str, Any]:
    """Each property's value now (a property that cannot be read: its error's words)."""
    values: dict[str, Any] = {}
    for prop in properties:
        try:
            values[prop["name"]] = summary(getattr(dev, prop["name"]))
        except Exception as exc:  # noqa: BLE001 - shown instead of the value
            values[prop["name"]] = {"error": type(exc).__name__, "message": str(exc)}
    return values


def _call_body(raw: bytes) -> tuple[list[Any], dict[str, Any]]:
    if not raw.strip():
        return [], {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict) or set(body) - {"args", "kwargs"}:
        raise BadRequest('the body must be {"args": [...], "kwargs": {...}} (both optional)')
    args, kwargs = body.get("args", []), body.get("kwargs", {})
    if not isinstance(args, list):
        raise BadRequest(f'"args" must be a list, got {type(args).__name__}')
    if not isinstance(kwargs, dict):
        raise BadRequest(f'"kwargs" must be an object, got {type(kwargs).__name__}')
    return args, kwargs


_CALL_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "args": {"type": "array", "items": {}},
                        "kwargs": {"type": "object"},
                    },
                }
            }
        }
    }
}


@router.post(
    "/devices/{name}/{method}",
    summary="Call a method (a job returns 202 and its status)",
    openapi_extra=_CALL_BODY,
    responses={200: {"description": "{result}"}, 202: {"description": "the job's status"}},
)
async def call(request: Request, name: str, method: str) -> Response:
    """Body ``{"args": [...], "kwargs": {...}}``. A plain method answers ``200
    {"result": ...}`` once done (arrays as ``{dtype, shape, data}``); a job answers
    ``202`` with its status at once (``id`` included)."""
    args, kwargs = _call_body(await request.body())
    limiter = request.app.state.limiter

    def run() -> tuple[int, Any]:
        lab = _lab(request)
        methods = {m["name"]: m for m in lab.describe(name)["methods"]}
        if method not in methods and method not in CALLABLE_RESERVED:
            raise MethodNotFound(
                f"device '{name}' has no method {method!r}; its methods: "
                f"{', '.join(sorted(methods))}"
            )
        call_args, call_kwargs = args, kwargs
        if method in methods:
            # As the command line does: by the annotations, 400 for what does not fit.
            call_args, call_kwargs = convert_arguments(
                methods[method], args, kwargs, text=False, where=f"{name}.{method}"
            )
        with _device(request, name) as dev:
            result = getattr(dev, method)(*call_args, **call_kwargs)
            if isinstance(result, JobHandle):
                # Over the same connection (a handle's own would be one per thread).
                return 202, dev.job_status(result.id)
        caller = getattr(request.state, "caller", None)
        if method == "reserve" and isinstance(result, dict):
            # A browser session keeps its lease; an API client gets it to send back.
            request.app.state.access.keep_lease(caller, name, result.get("lease"))
        elif method == "release" and result is True:
            request.app.state.access.keep_lease(caller, name, None)
        if isinstance(result, JobHandle):
            return 202, result.status()
        return 200, {"result": to_json(result)}

    status, content = await anyio.to_thread.run_sync(run, limiter=limiter)
    return JSONResponse(content, status_code=status)


@router.get("/devices/{name}/jobs", summary="The device's jobs, newest first")
def jobs(request: Request, name: str) -> list[dict[str, Any]]:
    """The status of every job the device keeps."""
    with _device(request, name) as dev:
        return to_json(dev.job_list())


@router.get("/devices/{name}/jobs/{job_id}", summary="A job's status")
def job(request: Request, name: str, job_id: str) -> dict[str, Any]:
    """id, device, method, state, progress, message, created, started, finished, error."""
    with _device(request, name) as dev:
        return to_json(dev.job_status(job_id))


def _format(value: str) -> str:
    if value not in _FORMATS:
        raise BadRequest(f"format={value!r}: use one of {', '.join(_FORMATS)}")
    return value


def _download(value: Any, fmt: str, stem: str) -> Response:
    if fmt == "json":
        return JSONResponse({"result": to_json(value)})
    array = as_array(value)
    if array is None:
        raise BadRequest(
            f"format={fmt}: the value is a {type(value).__name__}, not an array; ask for JSON"
        )
    if fmt == "csv":
        return Response(
            to_csv(array),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'},
        )
    chunks = npy_chunks(array)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(npy_length(array)),
            "Content-Disposition": f'attachment; filename="{stem}.npy"',
        },
    )


@router.get("/devices/{name}/jobs/{job_id}/result", summary="A finished job's result")
def result(request: Request, name: str, job_id: str, format: str = "json") -> Response:  # noqa: A002
    """``format=json`` (arrays as ``{dtype, shape, data}``), ``npy`` (a ``.npy`` file
    ``numpy.load`` reads), or ``csv`` (1-D and 2-D arrays). 409 while the job runs or
    if it was cancelled; a failed job's error as the error."""
    fmt = _format(format)
    with _device(request, name) as dev:
        status = dev.job_status(job_id)
        if status["state"] in _ACTIVE:
            raise JobStillRunning(
                f"job {job_id} ({status['method']}) is {status['state']} "
                f"({status['progress']:.0%}); its result comes when it is done"
            )
        if status["state"] == "failed":
            error = str(status.get("error") or "")
            kind = error.split(":", 1)[0] if ":" in error else "JobError"
            return JSONResponse(
                {"error": kind, "message": f"job {job_id} ({status['method']}) failed: {error}"},
                status_code=500,
            )
        if status["state"] == "cancelled":
            raise JobCancelled(f"job {job_id} ({status['method']}) was cancelled: no result")
        value = _lab(request).result(name, job_id, dev)
    return _download(value, fmt, f"{name}-{job_id}")


@router.post("/devices/{name}/jobs/{job_id}/cancel", summary="Cancel a job")
def cancel(request: Request, name: str, job_id: str) -> dict[str, Any]:
    """``{"cancelled": true}`` if it was queued or running (it stops soon), false if it
    had already finished; then its status."""
    with _device(request, name) as dev:
        cancelled = dev.job_cancel(job_id)
        return {"cancelled": bool(cancelled), "status": to_json(dev.job_status(job_id))}


@router.get("/devices/{name}/jobs/{job_id}/events", summary="A job's events (SSE)")
async def events(request: Request, name: str, job_id: str) -> StreamingResponse:
    """Server-Sent Events: ``status`` on each change of state or progress (at most 20 a
    second), ``item`` per published item (``{index, value}``, arrays summarised), a
    final ``end``."""
    await _run(request, lambda: _check(request, name, lambda d: d.job_status(job_id)))
    return await _sse(request, "job", name, job_id)


@router.get("/devices/{name}/jobs/{job_id}/items/{index}", summary="One stream item")
def item(request: Request, name: str, job_id: str, index: int, format: str = "json") -> Response:  # noqa: A002
    """The item ``index`` a job published (0 is its first), while the server keeps it:
    ``format=json`` or, for arrays, ``npy`` / ``csv``."""
    fmt = _format(format)
    if index < 0:
        raise BadRequest(f"index={index}: items count from 0")
    with _device(request, name) as dev:
        answer = dev.job_stream(job_id, index, 0, 1)
    first = answer["cursor"] - len(answer["items"])
    if answer["items"] and first == index:
        return _download(answer["items"][0], fmt, f"{name}-{job_id}-{index}")
    if answer.get("dropped") or first > index:
        raise ItemNotFound(f"item {index} of job {job_id} is no longer kept (newest kept first)")
    raise ItemNotFound(f"job {job_id} has not published item {index} (it has {first})")


@router.get("/devices/{name}/channels/{channel}/events", summary="A channel's items (SSE)")
async def channel(request: Request, name: str, channel: str) -> StreamingResponse:
    """Server-Sent Events: ``item`` with ``{index, time, value}`` for each item the
    channel gets from now on."""

    def known(dev: Any) -> None:
        names = dev.channels()
        if channel not in {c["name"] for c in names}:
            raise ChannelNotFound(
                f"device '{name}' has no channel {channel!r}; its channels: "
                f"{', '.join(sorted(c['name'] for c in names)) or 'none'}"
            )

    await _run(request, lambda: _check(request, name, known))
    return await _sse(request, "channel", name, channel)


@router.get("/devices/{name}/channels/{channel}/history", summary="A channel's recent items")
def history(request: Request, name: str, channel: str, count: int = 500) -> dict[str, Any]:
    """``{"items": [[timestamp, value], ...]}``: the newest ``count`` items (at most 5000)
    the server keeps of the channel, oldest first (arrays summarised)."""
    count = max(1, min(int(count), 5000))
    kept: list[Any] = []
    with _device(request, name) as dev:
        names = {c["name"] for c in dev.channels()}
        if channel not in names:
            raise ChannelNotFound(
                f"device '{name}' has no channel {channel!r}; its channels: "
                f"{', '.join(sorted(names)) or 'none'}"
            )
        cursor = 0
        for _ in range(20):  # the buffer holds at most 10,000 items by default
            answer = dev.channel_read(channel, cursor, 0, 1000)
            kept = (kept + answer["items"])[-count:]
            if not answer["items"] or answer["cursor"] == cursor:
                break
            cursor = answer["cursor"]
    return {"items": [[stamp, summary(value)] for stamp, value in kept]}


async def _run(request: Request, fn: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, limiter=request.app.state.limiter)


def _check(request: Request, name: str, fn: Any) -> Any:
    with _device(request, name) as dev:
        return fn(dev)


class EventStream(StreamingResponse):
    """Server-Sent Events whose end (``on_end``) runs when the response ends, however it
    ends: a client that leaves frees its stream at once, not at garbage collection."""

    def __init__(self, events: Any, on_end: Any) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._on_end = on_end

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await self.body_iterator.aclose()  # type: ignore[attr-defined]
                await self._on_end()


async def _sse(request: Request, kind: str, name: str, target: str) -> EventStream:
    feeds: Feeds = request.app.state.feeds
    caller = getattr(request.state, "caller", None)
    client = (caller.session if caller is not None else None) or (
        request.client.host if request.client is not None else "?"
    )
    events, end = await feeds.stream(request, client, kind, name, target)
    return EventStream(events, end)

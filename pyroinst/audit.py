"""The audit trail: one JSON line per remote action on a device, for "who did what, when".

``InstServer(audit_log="PATH")`` (``audit_log`` in the lab file's ``[server]``,
``--audit-log``) appends one line per remote action that can change something: every plain
call and job start of a device method, ``job_cancel``, ``reserve``, ``release`` and
property writes. Reads (``describe``, ``ping``, ``reservation``, ``job_status``,
``job_wait``, ``job_result``, ``job_list``, stream and channel reads, property reads,
``@concurrent`` methods) are logged only with ``audit_reads``.

A line::

    {"time": "2026-12-02T10:31:07.412Z", "device": "stage", "method": "move_to",
     "args": [12.5], "kwargs": {}, "owner": "alice", "user": "alice",
     "peer": "10.0.0.7:53122", "job": null, "outcome": "ok", "duration_s": 0.2031}

``args``/``kwargs`` are summarised (arrays as ``"ndarray float64[1000,3]"``, strings
over 80 characters cut, long lists shortened); ``owner`` is the name the caller presents
for reservations (None if it presents none), ``user`` the name of the key its connection
proved (``pyroinst.keys``: ``lab`` for a shared token; None without a token): the owner
is asserted, the user is proven; ``outcome`` is ``ok``, ``error: <type>``
or ``refused: <why>`` (reserved by someone else, device busy, device closed).

Each line is written whole with one ``write`` under a lock, so lines never interleave;
the file is opened for appending and opened again when it was moved or deleted (as
logrotate does), so no line goes to a rotated-away file. A write that fails later (a full
disk) is logged as an error, at most once a minute; the action itself is not refused.
``pyroinst audit PATH`` prints a file as a table (``read_records``, ``matching``).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from Pyro5.callcontext import current_context

from .errors import ConfigurationError, DeviceBusy, DeviceClosed, DeviceReserved
from .handles import JobHandle
from .reservations import authenticated_user, caller

__all__ = ["AuditLog", "audited", "summarise", "read_records", "matching", "parse_since"]

log = logging.getLogger(__name__)

_STRING_MAX = 80
_ITEMS_MAX = 10
_DEPTH_MAX = 3


def summarise(value: Any, depth: int = 0) -> Any:
    """A JSON-ready, bounded description of an argument value."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        if len(value) <= _STRING_MAX:
            return value
        return f"{value[: _STRING_MAX - 3]}... ({len(value)} characters)"
    if isinstance(value, np.ndarray):
        return f"ndarray {value.dtype}[{','.join(str(n) for n in value.shape)}]"
    if isinstance(value, np.generic):
        return summarise(value.item(), depth)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{type(value).__name__}[{memoryview(value).nbytes}]"
    if depth >= _DEPTH_MAX:
        return f"{type(value).__name__}(...)"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [summarise(v, depth + 1) for v in list(value)[:_ITEMS_MAX]]
        if len(value) > _ITEMS_MAX:
            items.append(f"... ({len(value)} items)")
        return items
    if isinstance(value, dict):
        out = {
            str(k)[:_STRING_MAX]: summarise(v, depth + 1)
            for k, v in list(value.items())[:_ITEMS_MAX]
        }
        if len(value) > _ITEMS_MAX:
            out["..."] = f"{len(value)} keys"
        return out
    return summarise(repr(value), depth)


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, DeviceReserved):
        return f"refused: reserved by {getattr(exc, 'owner', '?')}"
    if isinstance(exc, DeviceBusy):
        return "refused: device busy"
    if isinstance(exc, DeviceClosed):
        return "refused: device closed"
    # A driver's own exception travels as RemoteError: name the driver's class.
    remote = getattr(exc, "remote_type", None)
    return f"error: {str(remote).rsplit('.', 1)[-1] if remote else type(exc).__name__}"


def _peer() -> str | None:
    address = getattr(current_context, "client_sock_addr", None)
    if not address:
        return None
    try:
        return f"{address[0]}:{address[1]}"
    except (TypeError, IndexError):
        return str(address)


class AuditLog:
    """An append-only JSON-lines file of remote actions (see the module docstring).

    Raises ConfigurationError at once if ``path`` cannot be opened for appending.
    """

    def __init__(self, path: str | os.PathLike[str], reads: bool = False) -> None:
        self.path = Path(path)
        self.reads = bool(reads)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._failed_at = -math.inf
        try:
            self._open()
        except OSError as exc:
            raise ConfigurationError(
                f"the audit log {str(path)!r} cannot be written: {exc.strerror or exc}. "
                "Choose a path in a directory this user can write to."
            ) from None

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        stat = os.fstat(fd)
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._identity = fd, (stat.st_dev, stat.st_ino)

    def _current(self) -> int:
        """The open file, opened again if the path now names another file (or none)."""
        try:
            stat = os.stat(self.path)
            moved = (stat.st_dev, stat.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        if moved or self._fd is None:
            self._open()
        assert self._fd is not None
        return self._fd

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line."""
        line = (json.dumps(record, separators=(", ", ": "), default=str) + "\n").encode("utf-8")
        with self._lock:
            try:
                fd = self._current()
                written = os.write(fd, line)
                if written != len(line):  # only on a full disk: finish the line
                    os.write(fd, line[written:])
            except OSError as exc:
                now = time.monotonic()
                if now - self._failed_at >= 60:
                    self._failed_at = now
                    log.error("cannot write the audit log %s: %s", self.path, exc)

    def run(
        self,
        device: str,
        method: str,
        call: Callable[[], Any],
        args: tuple = (),
        kwargs: dict | None = None,
        job: str | None = None,
    ) -> Any:
        """Run ``call`` (the action), then write its line whatever its outcome."""
        owner = caller()  # before the call: forwarders clear the request's annotations
        user = authenticated_user()
        started = time.monotonic()
        when = _dt.datetime.now(_dt.UTC)
        outcome = "ok"
        try:
            result = call()
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        else:
            if isinstance(result, JobHandle):
                job = result.id
            return result
        finally:
            self.write(
                {
                    "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "device": device,
                    "method": method,
                    "args": summarise(list(args)),
                    "kwargs": summarise(dict(kwargs or {})),
                    "owner": owner,
                    "user": user,
                    "peer": _peer(),
                    "job": None if job is None else str(job),
                    "outcome": outcome,
                    "duration_s": round(time.monotonic() - started, 6),
                }
            )

    def close(self) -> None:
        """Close the file (later writes open it again)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def audited(kind: str, job_argument: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """Decorator for a servant's reserved members: log the call in the servant's audit log
    (``kind`` "write" always, "read" only with ``audit_reads``). ``job_argument``: the
    first argument is a job id."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        name = func.__name__

        @functools.wraps(func)
        def member(self: Any, *args: Any, **kwargs: Any) -> Any:
            audit = self._audit
            if audit is None or (kind == "read" and not audit.reads):
                return func(self, *args, **kwargs)
            job = None
            if job_argument:
                job = args[0] if args else kwargs.get("job_id")
            return audit.run(
                self._name, name, lambda: func(self, *args, **kwargs), args, kwargs, job
            )

        return member

    return decorate


# -- reading ------------------------------------------------------------------------------------
def read_records(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """The records of an audit log, and how many lines were not records."""
    records, skipped = [], 0
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if isinstance(record, dict) and "time" in record and "method" in record:
                records.append(record)
            else:
                skipped += 1
    return records, skipped


def parse_since(text: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """A point in time from ``"30m"``, ``"2h"``, ``"1d"``, ``"45s"`` (that long ago) or an
    ISO 8601 time (UTC if it names no zone); ValueError if it is neither."""
    now = now or _dt.datetime.now(_dt.UTC)
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:].lower() in units:
        try:
            amount = float(text[:-1])
        except ValueError:
            amount = math.nan
        if math.isfinite(amount) and amount >= 0:
            return now - _dt.timedelta(seconds=amount * units[text[-1].lower()])
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give an ISO 8601 time (2026-12-02T09:00, UTC unless "
            "it names a zone) or an age such as 30m, 2h, 1d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=_dt.UTC)


def matching(
    records: list[dict[str, Any]],
    device: str | None = None,
    owner: str | None = None,
    since: _dt.datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """The records of ``device``, by ``owner``, at or after ``since`` (each if given)."""
    for record in records:
        if device is not None and record.get("device") != device:
            continue
        if owner is not None and record.get("owner") != owner:
            continue
        if since is not None:
            try:
                when = _dt.datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
            except ValueError:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=_dt.UTC)
            if when < since:
                continue
        yield record

"""What the client commands print: tables, JSON, results, progress, files written."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

import pyroinst
from pyroinst.errors import JobCancelled
from pyroinst.summaries import array_summary

from .app import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, echo, fail, guard

__all__ = [
    "table",
    "listing",
    "jsonable",
    "array_summary",
    "print_result",
    "describe_value",
    "write_out",
    "check_out",
    "out_array",
    "Interrupts",
    "follow",
    "finish_job",
    "emit_result",
    "interrupted",
]


def printable(text: str) -> str:
    """``text`` with control characters (newlines, escapes, ...) shown escaped: a value
    from the network cannot add a line to a table or move the cursor."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [[printable(str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def listing(
    items: list[dict[str, Any]],
    as_json: bool,
    empty: str,
    header: list[str],
    row: Any,
) -> None:
    """A list command's output: the items as JSON (``--json``), ``empty`` if there are
    none, else a table of ``row(item)`` under ``header``."""
    if as_json:
        echo(json.dumps(items, indent=2))
    elif not items:
        echo(empty)
    else:
        table(header, [row(item) for item in items])


def jsonable(value: Any, out: Path | None = None) -> Any:
    if isinstance(value, np.ndarray):
        return {**array_summary(value), "out": str(out) if out else None}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, pyroinst.JobHandle):
        return {"job": value.id, "device": value.device}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def describe_value(value: Any) -> str:
    """One line for a value: arrays summarised, strings as they are, others as repr."""
    if isinstance(value, np.ndarray):
        s = array_summary(value)
        stats = (
            f", min {s['min']:.6g}, max {s['max']:.6g}, mean {s['mean']:.6g}" if "min" in s else ""
        )
        return f"array dtype {s['dtype']}, shape {tuple(s['shape'])}{stats}"
    if isinstance(value, str):
        return value
    return repr(value)


def print_result(value: Any) -> None:
    """Print a result for people (``describe_value``); None not at all."""
    if value is not None:  # nothing to show for None; the exit code says it worked
        echo(describe_value(value))


OUT_SUFFIXES = (".npy", ".csv", ".txt")


def check_out(out: Path) -> None:
    """Refuse an ``--out`` path that could not be written, before anything is started."""
    suffix = out.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise fail(
            f"--out {out}: use a .npy, .csv or .txt file name (got {suffix or 'no suffix'})",
            EXIT_USAGE,
        )
    if out.is_dir():
        raise fail(f"--out {out} is a folder; give a file name inside it", EXIT_USAGE)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise fail(f"--out {out}: the folder {folder} does not exist", EXIT_USAGE)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise fail(f"--out {out}: the folder {folder} is not writable", EXIT_USAGE)


def out_array(value: Any, what: str) -> np.ndarray:
    """``value`` as a numeric array for ``--out``; a clear error for anything else."""
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, list | tuple):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            array = np.asarray(None)
    else:
        array = np.asarray(None)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise fail(
            f"--out writes arrays (or lists of numbers), but {what} returned "
            f"{type(value).__name__}; nothing was written (the result is printed above)",
            EXIT_USAGE,
        )
    return array


def write_out(value: Any, out: Path, what: str, refetch: str | None = None) -> None:
    """Write an array result to ``out`` (.npy, .csv, .txt).

    ``refetch`` is the command that fetches the result again, named if writing fails.
    """
    array = out_array(value, what)
    suffix = out.suffix.lower()
    if suffix in (".csv", ".txt") and array.ndim not in (1, 2):
        again = f"; write it as .npy instead{f': {refetch}' if refetch else ''}"
        raise fail(
            f"{suffix} files hold 1-d or 2-d arrays; this one is {array.ndim}-d{again}", EXIT_USAGE
        )
    try:
        if suffix == ".npy":
            np.save(out, array)
        else:
            np.savetxt(out, array, delimiter="," if suffix == ".csv" else " ")
    except OSError as exc:
        again = f"; the result is kept on the server: {refetch}" if refetch else ""
        raise fail(f"cannot write {out}: {exc.strerror or exc}{again}", EXIT_FAILED) from None


class Interrupts:
    """Ctrl-C as a flag, not an exception, while a client command talks to a server.

    A KeyboardInterrupt raised inside a Pyro5 call would tear its connection down
    mid-message and could lose the id of a job just started; with the flag, the call in
    progress completes and the command then cancels (or leaves) the job and exits 130.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> Interrupts:
        import signal

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    @property
    def hit(self) -> bool:
        """True once Ctrl-C was pressed."""
        return self.event.is_set()


def follow(
    job: pyroinst.JobHandle,
    timeout: float | None,
    detach: bool,
    quiet: bool,
    interrupts: Interrupts,
    started_here: bool = True,
) -> dict:
    """Show the job's progress until it finishes; Ctrl-C cancels it (or leaves it, --detach).

    A job not started by this command (``started_here`` false) that has finished already
    is described as finished, with the time it did.

    On a terminal: a progress bar with the state (``queued`` and what the job waits for,
    then ``running``), the percentage, the elapsed time and the job's message. Piped (a log
    file): one line when the job starts and one when it ends.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    tty = sys.stderr.isatty()
    lines = not quiet and not tty
    began = time.monotonic()
    announced = False
    with Progress(
        TextColumn("[bold]{task.fields[method]}"),
        TextColumn("{task.fields[state]:9}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        transient=True,
        disable=quiet or not tty,
        console=stderr_console(),
    ) as bar:
        status = job.status()
        if not started_here and status["state"] in ("done", "failed", "cancelled"):
            # Finished before we looked: say so, not "started" and "after 0.0 s".
            if not quiet:
                when = time.strftime("%H:%M:%S", time.localtime(status["finished"] or 0))
                typer.echo(
                    f"job {job.id} ({status['method']} on {job.device}) had already "
                    f"{'finished' if status['state'] == 'done' else status['state']} "
                    f"(at {when})",
                    err=True,
                )
            return status
        task = bar.add_task(
            "job", total=1.0, method=status["method"], state=status["state"], message=""
        )
        while True:
            if interrupts.hit:
                break
            status = job.status()
            state = status["state"]
            if state == "queued":
                waiting = status.get("waiting_for")
                message = f"waiting for {waiting}" if waiting else ""
            else:
                message = status["message"] or ""
            bar.update(task, completed=status["progress"], state=state, message=message)
            if lines and not announced and state != "queued":
                typer.echo(f"job {job.id} ({status['method']} on {job.device}) started", err=True)
                announced = True
            if state in ("done", "failed", "cancelled"):
                if lines:
                    typer.echo(
                        f"job {job.id} ({status['method']}) {state} after "
                        f"{time.monotonic() - began:.1f} s",
                        err=True,
                    )
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise fail(
                    f"job {job.id} still {state} after {timeout:g} s "
                    f"(left running; follow it with `pyroinst job {job.device} "
                    f"{job.id} --wait`)",
                    EXIT_FAILED,
                )
            job.wait(timeout=0.1)
    raise interrupted(job, detach)


def interrupted(job: pyroinst.JobHandle, detach: bool) -> typer.Exit:
    """After Ctrl-C: cancel the job (or leave it running, ``detach``), say so; the Exit."""
    if detach:
        typer.echo(
            f"interrupted; job {job.id} left running (`pyroinst job {job.device} {job.id} --wait`)",
            err=True,
        )
    else:
        cancelled = job.cancel()
        typer.echo(
            f"interrupted; job {job.id} {'cancelled' if cancelled else 'had already finished'}",
            err=True,
        )
    return typer.Exit(EXIT_INTERRUPTED)


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def finish_job(
    job: pyroinst.JobHandle, status: dict, out: Path | None, as_json: bool, lines: bool = False
) -> None:
    """Print (and with ``out`` write) a finished job's result; its error if it failed.

    ``lines``: JSON on one line (after the JSON lines of ``--follow``).
    """
    try:
        value = job.result(timeout=0)  # raises the job's error, or JobCancelled
    except Exception as exc:  # noqa: BLE001
        if as_json:
            echo(json.dumps({**status, "result": None}, indent=None if lines else 2, default=str))
        if isinstance(exc, JobCancelled):
            raise fail(f"job {job.id} ({status['method']}) was cancelled", EXIT_FAILED) from None
        raise guard(exc) from None
    refetch = f"pyroinst job {job.device} {job.id} --out FILE"
    what = f"job {job.id} ({status['method']})"
    emit_result(value, out, as_json, status, what=what, refetch=refetch, lines=lines)


def emit_result(
    value: Any,
    out: Path | None,
    as_json: bool,
    status: dict | None,
    what: str = "the method",
    refetch: str | None = None,
    lines: bool = False,
) -> None:
    """Print a result (JSON with ``as_json``), then write it to ``out`` if given.

    The result is printed first, so a file that cannot be written loses nothing.
    """
    if as_json:
        doc = dict(status or {})
        doc["result"] = jsonable(value, out)
        echo(json.dumps(doc, indent=None if lines else 2, default=str))
    else:
        print_result(value)
    if out is not None:
        write_out(value, out, what, refetch)
        typer.echo(f"written to {out}", err=True)

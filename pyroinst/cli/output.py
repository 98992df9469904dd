"""What the client commands print: tables, JSON, results, progress, files written."""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

import pyroinst
from pyroinst.errors import JobCancelled

from .app import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, echo, fail, guard

__all__ = [
    "table",
    "jsonable",
    "array_summary",
    "print_result",
    "write_out",
    "Interrupts",
    "follow",
    "finish_job",
    "emit_result",
]


def table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


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


def array_summary(a: np.ndarray) -> dict[str, Any]:
    summary: dict[str, Any] = {"dtype": str(a.dtype), "shape": list(a.shape)}
    if a.size and (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        real = a.real if np.iscomplexobj(a) else a
        summary.update(min=float(np.min(real)), max=float(np.max(real)), mean=float(np.mean(real)))
    return summary


def print_result(value: Any) -> None:
    if isinstance(value, np.ndarray):
        s = array_summary(value)
        stats = (
            f", min {s['min']:.6g}, max {s['max']:.6g}, mean {s['mean']:.6g}" if "min" in s else ""
        )
        echo(f"array dtype {s['dtype']}, shape {tuple(s['shape'])}{stats}")
    elif isinstance(value, str):
        echo(value)
    else:
        echo(repr(value))


def write_out(value: Any, out: Path) -> None:
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001
        array = None
    if array is None or array.dtype == object:
        raise fail(f"--out needs an array result, got {type(value).__name__}", EXIT_USAGE)
    suffix = out.suffix.lower()
    try:
        if suffix == ".npy":
            np.save(out, array)
        elif suffix in (".csv", ".txt"):
            if array.ndim not in (1, 2):
                raise fail(
                    f"{suffix} files hold 1-d or 2-d arrays; this one is {array.ndim}-d: use .npy",
                    EXIT_USAGE,
                )
            np.savetxt(out, array, delimiter="," if suffix == ".csv" else " ")
        else:
            raise fail(f"--out {out}: use a .npy, .csv or .txt file name", EXIT_USAGE)
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror}", EXIT_FAILED) from None


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
) -> dict:
    """Show a progress bar until the job finishes; Ctrl-C cancels it (or leaves it, --detach)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(
        TextColumn("[bold]{task.fields[method]}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        transient=True,
        disable=quiet or not sys.stderr.isatty(),
        console=stderr_console(),
    ) as bar:
        status = job.status()
        task = bar.add_task("job", total=1.0, method=status["method"], message="")
        while True:
            if interrupts.hit:
                break
            status = job.status()
            bar.update(task, completed=status["progress"], message=status["message"] or "")
            if status["state"] in ("done", "failed", "cancelled"):
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise fail(
                    f"job {job.id} still {status['state']} after {timeout:g} s "
                    f"(left running; follow it with `pyroinst job {job.device} "
                    f"{job.id} --wait`)",
                    EXIT_FAILED,
                )
            job.wait(timeout=0.1)
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
    raise typer.Exit(EXIT_INTERRUPTED)


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def finish_job(job: pyroinst.JobHandle, status: dict, out: Path | None, as_json: bool) -> None:
    try:
        value = job.result(timeout=0)  # raises the job's error, or JobCancelled
    except Exception as exc:  # noqa: BLE001
        if as_json:
            echo(json.dumps({**status, "result": None}, indent=2, default=str))
        if isinstance(exc, JobCancelled):
            raise fail(f"job {job.id} ({status['method']}) was cancelled", EXIT_FAILED) from None
        raise guard(exc) from None
    emit_result(value, out, as_json, status)


def emit_result(value: Any, out: Path | None, as_json: bool, status: dict | None) -> None:
    if out is not None:
        write_out(value, out)
    if as_json:
        doc = dict(status or {})
        doc["result"] = jsonable(value, out)
        echo(json.dumps(doc, indent=2, default=str))
    else:
        print_result(value)
        if out is not None:
            typer.echo(f"written to {out}", err=True)

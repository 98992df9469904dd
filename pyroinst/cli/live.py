"""Live data in the command: ``call ... --follow`` (a job's items) and ``watch`` (a channel)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

import pyroinst

from .app import EXIT_FAILED, EXIT_USAGE, JsonOpt, app, connect, echo, fail, guard, setup_logging
from .output import Interrupts, describe_value, interrupted, jsonable

__all__ = ["follow_items", "watch_command", "check_out_dir"]


def check_out_dir(out_dir: Path) -> None:
    """Refuse an ``--out-dir`` that is not a writable folder, before anything starts."""
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"--out-dir {out_dir} is a file; give a folder", EXIT_USAGE)
    parent = out_dir.absolute().parent
    if not out_dir.exists() and not parent.is_dir():
        # As --out does: a typo in the path must not make a tree of folders.
        raise fail(
            f"--out-dir {out_dir}: the folder {parent} does not exist (make it first)",
            EXIT_USAGE,
        )
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise fail(
            f"--out-dir {out_dir}: cannot make the folder: {exc.strerror}", EXIT_USAGE
        ) from None


def follow_items(
    job: pyroinst.JobHandle,
    out_dir: Path | None,
    as_json: bool,
    timeout: float | None,
    detach: bool,
    interrupts: Interrupts,
) -> dict:
    """Print each item the job publishes as it arrives (and write array items to
    ``out_dir``), until the job ends; returns its final status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with job.stream() as stream:
        # One read at a time (each returns within about a second, items or not), so
        # Ctrl-C and --timeout are noticed while no item comes.
        while not interrupts.hit:
            if deadline is not None and time.monotonic() >= deadline:
                raise fail(
                    f"job {job.id} still running after {timeout:g} s (left running; follow "
                    f"it with `pyroinst job {job.device} {job.id} --wait`)",
                    EXIT_FAILED,
                )
            items = stream.read()
            if items is None:
                break
            first = stream.number - len(items) + 1
            for n, value in enumerate(items, first):
                path = None
                if out_dir is not None and isinstance(value, np.ndarray):
                    path = out_dir / f"{n:06d}.npy"
                    np.save(path, value)
                if as_json:
                    echo(json.dumps({"item": n, "value": jsonable(value, path)}, default=str))
                else:
                    echo(f"item {n}: {describe_value(value)}")
    if interrupts.hit:
        raise interrupted(job, detach)
    if stream.dropped:
        typer.echo(f"{stream.dropped} item(s) were dropped before they could be read", err=True)
    return job.status()


@app.command("watch")
def watch_command(
    device: str,
    channel: str,
    count: Annotated[int | None, typer.Option(help="Stop after this many items.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (exit 0).")
    ] = None,
    start: Annotated[
        str, typer.Option(help='"latest" (new items only) or an item number (0: the oldest kept).')
    ] = "latest",
    as_json: JsonOpt = False,
) -> None:
    """Print a device channel's values as they come (Ctrl-C to stop)."""
    setup_logging(logging.WARNING)
    if count is not None and count < 1:
        raise fail("--count must be 1 or more", EXIT_USAGE)
    first: int | str = start
    if start != "latest":
        try:
            first = int(start)
        except ValueError:
            raise fail(
                f'--start must be "latest" or an item number, got {start!r}', EXIT_USAGE
            ) from None
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with Interrupts() as interrupts, connect(device).watch(channel, first) as stream:
            # One read at a time (each within about a second), so Ctrl-C and --timeout
            # are noticed while the channel is quiet.
            while not interrupts.hit and (count is None or seen < count):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                items = stream.read()
                if items is None:
                    break
                first_number = stream.number - len(items) + 1
                for number, (when, value) in enumerate(items, first_number):
                    if as_json:
                        echo(
                            json.dumps(
                                {"item": number, "time": when, "value": jsonable(value)},
                                default=str,
                            )
                        )
                    else:
                        stamp = (
                            time.strftime("%H:%M:%S", time.localtime(when))
                            + f".{int(when % 1 * 1000):03d}"
                        )
                        echo(f"{stamp}  {describe_value(value)}")
                    seen += 1
                    if count is not None and seen >= count:
                        break
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        raise guard(exc) from None
    if interrupts.hit:
        raise typer.Exit(130)

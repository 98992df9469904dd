"""Job commands: jobs (a device's kept jobs) and job (one job: status, wait, follow, cancel)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer

import pyroinst

from .app import (
    EXIT_USAGE,
    JsonOpt,
    OutDirOpt,
    app,
    connect,
    echo,
    fail,
    guard,
    setup_logging,
    state,
)
from .live import check_out_dir, follow_items
from .output import Interrupts, check_out, finish_job, follow, listing

__all__: list[str] = []


@app.command("jobs")
def jobs_command(device: str, as_json: JsonOpt = False) -> None:
    """The device's kept jobs, newest first."""
    setup_logging(logging.WARNING)
    try:
        jobs = connect(device).job_list()
    except Exception as exc:  # noqa: BLE001
        raise guard(exc) from None
    listing(
        jobs,
        as_json,
        "no jobs",
        ["id", "method", "state", "progress", "created", "error"],
        lambda j: [
            j["id"],
            j["method"],
            j["state"],
            f"{j['progress']:.0%}",
            time.strftime("%H:%M:%S", time.localtime(j["created"])),
            j["error"] or "",
        ],
    )


@app.command("job")
def job_command(
    device: str,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for it (progress bar), then print the result.")
    ] = False,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel it.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write an array result.")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="With --wait or --follow: seconds to wait for it (then exit 1)."),
    ] = None,
    follow_stream: Annotated[
        bool,
        typer.Option("--follow", help="Print each item it publishes as it arrives, then wait."),
    ] = False,
    out_dir: OutDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One job: its status; --wait (or --follow) for its result, --cancel to stop it.

    Ctrl-C while waiting leaves the job running (it was started elsewhere).
    """
    setup_logging(logging.WARNING)
    if out is not None:
        check_out(out)
    if out_dir is not None:
        if not follow_stream:
            raise fail("--out-dir writes the items of --follow: add --follow", EXIT_USAGE)
        check_out_dir(out_dir)
    if (timeout is not None) and not (wait or follow_stream):
        raise fail("--timeout is for --wait or --follow: add one of them", EXIT_USAGE)
    wait = wait or follow_stream
    try:
        dev = connect(device, timeout)
        status = dev.job_status(job_id)
        job = pyroinst.JobHandle(job_id, device, str(dev._pyroUri))
        if cancel:
            cancelled = job.cancel()
            job.wait(timeout=5)
            status = job.status()
            if not as_json:
                echo(
                    f"job {job_id}: {'cancel requested' if cancelled else 'already finished'}"
                    f"; now {status['state']}"
                )
            else:
                echo(json.dumps({**status, "cancelled": cancelled}, indent=2))
            return
        if wait:
            with pyroinst.client.default_timeout_set(timeout), Interrupts() as interrupts:
                if follow_stream:
                    status = follow_items(job, out_dir, as_json, timeout, True, interrupts)
                else:
                    status = follow(
                        job, timeout, True, state.verbose < 0, interrupts, started_here=False
                    )
        if status["state"] in ("done", "failed", "cancelled") and (wait or out is not None):
            finish_job(job, status, out, as_json, lines=follow_stream)
            return
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        raise guard(exc) from None
    if as_json:
        echo(json.dumps(status, indent=2))
        return
    echo(
        f"job {status['id']}  {status['method']}  {status['state']}  {status['progress']:.0%}"
        f"{'  ' + status['message'] if status['message'] else ''}"
    )
    if status["error"]:
        echo(f"error: {status['error']}")

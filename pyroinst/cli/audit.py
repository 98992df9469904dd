"""``pyroinst audit``: an audit log (``InstServer(audit_log=)``) as a table."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from pyroinst.audit import matching, parse_since, read_records

from .app import EXIT_NOT_FOUND, EXIT_USAGE, JsonOpt, app, echo, fail, setup_logging
from .output import table

__all__ = ["audit_command"]


def _arguments(record: dict[str, Any]) -> str:
    parts = [json.dumps(a) for a in record.get("args") or []]
    parts += [f"{k}={json.dumps(v)}" for k, v in (record.get("kwargs") or {}).items()]
    text = ", ".join(parts)
    return text if len(text) <= 60 else text[:57] + "..."


@app.command("audit")
def audit_command(
    path: Annotated[Path, typer.Argument(help="The audit log (a server's audit_log).")],
    device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only actions of this owner.")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only from this time on: ISO 8601 (UTC unless it says) or 30m, 2h, 1d."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Who did what, when: the lines of an audit log as a table, oldest first."""
    setup_logging(logging.WARNING)
    try:
        since_time = None if since is None else parse_since(since)
    except ValueError as exc:
        raise fail(f"--since: {exc}", EXIT_USAGE) from None
    try:
        records, skipped = read_records(path)
    except FileNotFoundError:
        raise fail(f"no audit log at {str(path)!r}", EXIT_NOT_FOUND) from None
    except OSError as exc:
        raise fail(f"cannot read the audit log {str(path)!r}: {exc.strerror}", EXIT_USAGE) from None
    if skipped:
        typer.echo(f"{path}: skipped {skipped} line(s) that are not audit records", err=True)
    chosen = list(matching(records, device, owner, since_time))
    if as_json:
        echo(json.dumps(chosen, indent=2))
        return
    if not chosen:
        echo("no matching actions")
        return
    table(
        [
            "time (UTC)",
            "device",
            "method",
            "arguments",
            "owner",
            "user",
            "peer",
            "job",
            "outcome",
            "s",
        ],
        [
            [
                str(r.get("time", "")).replace("T", " ").rstrip("Z"),
                r.get("device") or "",
                r.get("method") or "",
                _arguments(r),
                r.get("owner") or "-",
                r.get("user") or "-",
                r.get("peer") or "-",
                r.get("job") or "",
                r.get("outcome") or "",
                f"{float(r.get('duration_s') or 0):.3f}",
            ]
            for r in chosen
        ],
    )

"""``pyroinst token new``: a new shared token, or a person's own key for a key file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from pyroinst.errors import ConfigurationError
from pyroinst.keys import Key, new_lab_id, new_secret, read_key_file

from .app import EXIT_USAGE, app, echo, fail, setup_logging

__all__ = ["token_app"]

token_app = typer.Typer(
    help="The lab's token and people's own keys (see docs/security.md).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(token_app, name="token")


def _append(path: Path, line: str) -> None:
    """Add ``line`` to the key file ``path`` (made readable by its owner only if new)."""
    existed = path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        if existed and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            out.write("\n")
        out.write(line + "\n")


@token_app.command("new")
def token_new(
    name: Annotated[
        str | None,
        typer.Option(help="Make a person's own key with this name (else a shared token)."),
    ] = None,
    lab: Annotated[
        str | None,
        typer.Option(help="The lab's id for named keys (default: the key file's, else new)."),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="Add the key's line to this servers' key file (made if missing, mode 600).",
        ),
    ] = None,
) -> None:
    """Print a new token: 256 random bits.

    With --name, a person's own key: the token (NAME@LAB:SECRET) goes to stdout, for
    PYROINST_TOKEN or a token file on that person's PCs; the line for the servers' key
    file (NAME@LAB = SECRET) goes to stderr, or into --key-file.
    """
    setup_logging(logging.WARNING)
    secret = new_secret()
    if name is None:
        if key_file is not None or lab is not None:
            raise fail("--key-file and --lab are for named keys: add --name", EXIT_USAGE)
        echo(secret)
        return
    existing = None
    if key_file is not None and key_file.exists():
        try:
            existing = read_key_file(key_file)
        except ConfigurationError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
    if existing is not None:
        labs = {k.lab for k in existing.keys.values() if k.lab}
        if lab is not None and labs and lab not in labs:
            raise fail(f"{key_file} holds keys of lab {sorted(labs)[0]!r}, not {lab!r}", EXIT_USAGE)
        lab = lab or (sorted(labs)[0] if labs else None)
        if name in existing.keys:
            raise fail(
                f"{key_file} already has a key named {name!r}: remove its line first "
                "(that revokes it once the servers restart)",
                EXIT_USAGE,
            )
    try:
        key = Key(name, lab or new_lab_id(), secret)
        parsed = Key.parse_checked(key.token())
    except ValueError as exc:
        raise fail(f"--name/--lab: {exc}", EXIT_USAGE) from None
    line = f"{parsed.name}@{parsed.lab} = {parsed.secret}"
    if key_file is not None:
        try:
            _append(key_file, line)
        except OSError as exc:
            raise fail(f"cannot write the key file {str(key_file)!r}: {exc.strerror}", 1) from None
        typer.echo(f"added {name!r} to {key_file}; restart its servers to take it", err=True)
    else:
        typer.echo(f"servers' key file line (keep it secret):\n  {line}", err=True)
    echo(key.token())

"""The typer app, its global options and what every command shares (errors, exit codes).

Exit codes:

  0    success (also ``serve``/``ns`` stopped by Ctrl-C or SIGTERM)
  1    the device raised, the job failed or was cancelled, a job did not finish within
       ``--timeout``, or a server could not start
  2    usage error, including every lab-file error and arguments that do not fit a method
  3    device, method, job or channel not found, or name server (or device server)
       unreachable
  4    authentication failed (the lab's token is missing or wrong)
  130  a client command interrupted by Ctrl-C
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import Pyro5.errors
import typer

import pyroinst
from pyroinst import tokens
from pyroinst.config import LabFileError
from pyroinst.errors import (
    ChannelNotFound,
    ConfigurationError,
    DeviceNotFound,
    DeviceUnreachable,
    JobNotFound,
    NameServerNotFound,
    PyroinstError,
    SignatureError,
)

__all__ = [
    "app",
    "state",
    "echo",
    "fail",
    "guard",
    "setup_logging",
    "connect",
    "started",
    "JsonOpt",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

_HELP = """Put a lab's instruments on the network (Pyro5); list, inspect and call them.

\b
Exit codes:
  0    success (also serve/ns stopped by Ctrl-C or SIGTERM)
  1    the device raised, the job failed or was cancelled, a job did not finish within
       --timeout (it is left running), or a server could not start
  2    usage error, including every lab-file error and arguments that do not fit
  3    device, method, job or channel not found, or name server / device server unreachable
  4    authentication failed (the lab's token is missing or wrong)
  130  a client command interrupted by Ctrl-C
"""

app = typer.Typer(
    name="pyroinst",
    help=_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class State:
    """Global options of this invocation, set by ``main_options``."""

    ns_host: str | None = None
    ns_port: int | None = None
    owner: str | None = None
    token_file: str | None = None
    verbose = 0
    began = 0.0


state = State()


def echo(text: str = "") -> None:
    """Print a line of a command's output (stdout)."""
    typer.echo(text)


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` on stderr; the Exit to raise with ``code``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def exit_code(exc: BaseException) -> int:
    """The exit code for an exception that ends a command."""
    if isinstance(exc, LabFileError | SignatureError | ConfigurationError):
        return EXIT_USAGE
    if isinstance(
        exc, DeviceNotFound | JobNotFound | ChannelNotFound | NameServerNotFound | DeviceUnreachable
    ):
        return EXIT_NOT_FOUND
    if isinstance(exc, pyroinst.AuthenticationFailed):
        return EXIT_AUTH
    if isinstance(exc, Pyro5.errors.CommunicationError):
        return EXIT_NOT_FOUND
    if isinstance(exc, Pyro5.errors.NamingError):
        return EXIT_NOT_FOUND
    return EXIT_FAILED


def error_message(exc: BaseException) -> str:
    """The one-line message for an exception that ends a command."""
    if isinstance(exc, PyroinstError):
        # Before CommunicationError: AuthenticationFailed is both, and says which server.
        return str(exc)
    if isinstance(exc, Pyro5.errors.CommunicationError):
        return f"device server unreachable: {exc}"
    return f"{type(exc).__name__}: {exc}"


def guard(exc: BaseException) -> typer.Exit:
    """Turn an exception into the one-line error and exit code (traceback only with -v)."""
    if state.verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        remote = getattr(exc, "remote_traceback", None)
        if remote:
            typer.echo("remote traceback:\n" + remote, err=True)
    return fail(error_message(exc), exit_code(exc))


def started() -> float:
    """When this command started, as a ``time.monotonic()`` value.

    Deadlines such as ``list --timeout`` count from here. Run as a program, that is when
    its process started: the interpreter's start is part of what the user waits for.
    Run inside a longer-lived process (tests, a notebook), when the command was invoked.
    """
    return state.began


def _process_start(now: float) -> float:
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return now
    age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    return now - age if 0 <= age < 10 else now  # an older process: invoked from within


def setup_logging(default: int) -> None:
    level = logging.DEBUG if state.verbose else default
    if state.verbose < 0:
        level = logging.ERROR
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(level)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"pyroinst {pyroinst.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ns_host: Annotated[
        str | None, typer.Option("--ns-host", envvar="PYROINST_NS_HOST", help="Name server host.")
    ] = None,
    ns_port: Annotated[
        int | None, typer.Option("--ns-port", envvar="PYROINST_NS_PORT", help="Name server port.")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="PYROINST_TOKEN_FILE",
            help="File holding the lab's token (else PYROINST_TOKEN).",
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option("--tls-ca", envvar="PYROINST_TLS_CA", help="Lab CA (turns TLS on)."),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", envvar="PYROINST_TLS_CERT", help="This PC's certificate."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", envvar="PYROINST_TLS_KEY", help="This PC's key.")
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            envvar="PYROINST_OWNER",
            help="Who you are, for device reservations (see `reserve`).",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Debug logging and tracebacks.")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    state.began = _process_start(time.monotonic())
    state.ns_host, state.ns_port = ns_host, ns_port
    state.owner = owner
    if tls_ca is not None:
        try:
            pyroinst.configure_tls(
                tls_ca,
                tls_cert,
                tls_key,
                os.environ.get("PYROINST_TLS_REQUIRE_CLIENT_CERT", "").lower()
                in ("1", "yes", "true"),
            )
        except ConfigurationError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
    state.token_file = str(token_file) if token_file is not None else None
    if token_file is not None:
        try:
            tokens.set_token(tokens.read_token_file(token_file))
        except ConfigurationError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
    state.verbose = 1 if verbose else (-1 if quiet else 0)


def ns_of(host: str | None, port: int | None) -> tuple[str | None, int | None]:
    return host or state.ns_host, port if port is not None else state.ns_port


# -- servers ------------------------------------------------------------------------------


def connect(name: str, timeout: float | None = None) -> Any:
    """A proxy of ``name`` whose calls wait at most ``timeout`` seconds (None: the default,
    PYROINST_TIMEOUT else 30 s)."""
    proxy = pyroinst.connect(
        name, ns_host=state.ns_host, ns_port=state.ns_port, owner=state.owner, timeout=timeout
    )
    if state.owner:
        from .leases import recall

        proxy._pyroinst_lease = recall(name, state.owner, (state.ns_host, state.ns_port))
    return proxy


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
OutDirOpt = Annotated[
    Path | None,
    typer.Option("--out-dir", help="With --follow: write array items to DIR/000000.npy..."),
]

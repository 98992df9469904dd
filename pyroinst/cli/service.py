"""``pyroinst service``: a systemd unit that starts a server (or the name server) at boot
and restarts it after a crash, with the system's own supervisor.

The unit names the absolute ``pyroinst`` of this installation, the lab file and its
folder. The lab's token never goes into the unit: a token file given with
``--token-file`` is handed over as a systemd credential (``LoadCredential=``) and read
from there; a token file named in the lab file is read by the server itself.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from pyroinst.config import LabFileError, load_lab

from .app import EXIT_FAILED, EXIT_USAGE, app, echo, fail, state

__all__ = ["service_command", "server_unit", "ns_unit", "pyroinst_executable"]


def pyroinst_executable() -> list[str]:
    """The command that runs this installation's pyroinst, with absolute paths."""
    script = Path(sys.executable).parent / "pyroinst"
    if script.is_file():
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "pyroinst"]


def _global_options(token_file: Path | None) -> list[str]:
    options = []
    if state.ns_host:
        options += ["--ns-host", state.ns_host]
    if state.ns_port is not None:
        options += ["--ns-port", str(state.ns_port)]
    if token_file is not None:
        options += ["--token-file", "${CREDENTIALS_DIRECTORY}/pyroinst-token"]
    return options


def _unit(description: str, command: list[str], workdir: Path, token_file: Path | None,
          extra: list[str] = ()) -> str:  # fmt: skip
    exec_start = " ".join(shlex.quote(part) if "$" not in part else part for part in command)
    service = [
        "Type=simple",
        f"ExecStart={exec_start}",
        f"WorkingDirectory={workdir}",
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=30",
        # Logs reach the journal at once (journalctl -u NAME).
        "Environment=PYTHONUNBUFFERED=1",
        *extra,
    ]
    if token_file is not None:
        # The token stays in its file; systemd hands the file over, never its content here.
        service.insert(1, f"LoadCredential=pyroinst-token:{token_file}")
    return "\n".join(
        [
            "[Unit]",
            f"Description={description}",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            *service,
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def server_unit(lab: Path, token_file: Path | None = None) -> str:
    """The unit text for ``pyroinst serve LAB`` (LAB an absolute path)."""
    command = [*pyroinst_executable(), *_global_options(token_file), "serve", str(lab)]
    # systemd makes /var/log/pyroinst (%L/pyroinst), the place for an audit_log.
    extra = ["LogsDirectory=pyroinst"]
    return _unit(f"pyroinst device server ({lab.name})", command, lab.parent, token_file, extra)


def ns_unit(host: str, port: int, storage: str | None, token_file: Path | None = None) -> str:
    """The unit text for ``pyroinst ns`` on ``host``:``port``, names kept in ``storage``."""
    command = [*pyroinst_executable(), *_global_options(token_file), "ns"]
    command += ["--host", host, "--port", str(port)]
    extra = []
    if storage is None:
        # systemd makes /var/lib/pyroinst (or ~/.local/state/pyroinst for --user).
        storage = "%S/pyroinst/names.db"
        extra.append("StateDirectory=pyroinst")
    command += ["--storage", storage]
    return _unit("pyroinst name server", command, Path("/"), token_file, extra)


@app.command("service")
def service_command(
    lab: Annotated[Path | None, typer.Argument(help="Lab file of the server.")] = None,
    ns: Annotated[bool, typer.Option("--ns", help="A unit for the name server instead.")] = False,
    host: Annotated[str, typer.Option(help="--ns: the address to bind.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="--ns: the port.")] = 9090,
    storage: Annotated[
        str | None, typer.Option(help="--ns: where the names are kept (default: state dir).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Unit name (default pyroinst-LAB or pyroinst-ns).")
    ] = None,
    install: Annotated[
        bool, typer.Option("--install", help="Write the unit where systemd reads it.")
    ] = False,
    user: Annotated[
        bool, typer.Option("--user", help="With --install: a user unit (~/.config/systemd/user).")
    ] = False,
) -> None:
    """Print (or --install) a systemd unit that starts a server at boot and restarts it
    after a crash. The token is never written into the unit (see --token-file)."""
    if ns == (lab is not None):
        raise fail("give a lab file, or --ns for the name server (not both)", EXIT_USAGE)
    token_file = _token_file()
    if ns:
        text = ns_unit(host, port, storage, token_file)
        unit = name or "pyroinst-ns"
    else:
        assert lab is not None
        lab = lab.expanduser().absolute()
        try:
            load_lab(lab)  # a unit for a lab file that cannot serve would only crash-loop
        except LabFileError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        text = server_unit(lab, token_file)
        unit = name or f"pyroinst-{lab.stem}"
    unit = unit if unit.endswith(".service") else f"{unit}.service"
    if ns and token_file is None and not host.startswith("127.") and host != "localhost":
        typer.echo(
            f"warning: this name server binds {host} (every PC of the network can reach it) "
            "without a token: anyone there can list, register and remove names. Make a "
            "token file only root can read, e.g.\n"
            '  python -c "import secrets; print(secrets.token_urlsafe(32))" > '
            "/etc/pyroinst/token && chmod 600 /etc/pyroinst/token\n"
            f"then: pyroinst --token-file /etc/pyroinst/token service --ns --host {host} ...",
            err=True,
        )
    if os.environ.get("PYROINST_TOKEN") and token_file is None:
        typer.echo(
            "note: the token set in PYROINST_TOKEN is not written into the unit; put it in a "
            "file only root can read and give --token-file FILE (or token_file in the lab "
            "file)",
            err=True,
        )
    if not install:
        echo(text.rstrip("\n"))
        return
    folder = Path.home() / ".config" / "systemd" / "user" if user else Path("/etc/systemd/system")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / unit).write_text(text)
    except OSError as exc:
        raise fail(f"cannot write {folder / unit}: {exc.strerror}", EXIT_FAILED) from None
    ctl = "systemctl --user" if user else "systemctl"
    echo(f"wrote {folder / unit}; to start it now and at every boot:")
    echo(f"  {ctl} daemon-reload")
    echo(f"  {ctl} enable --now {unit}")
    echo(f"logs: journalctl {'--user ' if user else ''}-u {unit} -f")


def _token_file() -> Path | None:
    given = state.token_file  # --token-file, or PYROINST_TOKEN_FILE
    return Path(given).expanduser().absolute() if given else None

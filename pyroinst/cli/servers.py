"""Server commands: ``pyroinst ns`` and ``pyroinst serve``."""

from __future__ import annotations

import logging
import shlex
import sys
import threading
from pathlib import Path
from typing import Annotated

import Pyro5.errors
import typer

import pyroinst
from pyroinst import tokens
from pyroinst.admission import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_HOST
from pyroinst.config import DeviceStartError, LabConfig, LabFileError, demo_lab, load_lab
from pyroinst.errors import ConfigurationError, PyroinstError
from pyroinst.handshakes import DEFAULT_MAX_PENDING_HANDSHAKES
from pyroinst.nameserver import DEFAULT_NS_HOST, DEFAULT_NS_PORT, EmbeddedNameServer
from pyroinst.server import InstServer

from .app import EXIT_FAILED, EXIT_USAGE, app, echo, error_message, fail, ns_of, setup_logging

__all__ = ["ns_command", "serve_command"]


@app.command("ns")
def ns_command(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (env PYROINST_NS_HOST, default localhost).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (env PYROINST_NS_PORT, default 9090).")
    ] = None,
    storage: Annotated[
        Path | None,
        typer.Option(
            envvar="PYROINST_NS_STORAGE",
            help="Keep the names in this file (sqlite): back at once after a restart.",
        ),
    ] = None,
    accept_plain_token: Annotated[
        bool,
        typer.Option(
            "--accept-plain-token",
            help="Also take the token sent as plain text by plain Pyro5 scripts (weaker).",
        ),
    ] = False,
    handshake_timeout: Annotated[
        float, typer.Option(help="Seconds a new connection gets to authenticate.")
    ] = DEFAULT_HANDSHAKE_TIMEOUT,
    max_connections_per_host: Annotated[
        int, typer.Option(help="Connections one client address may hold.")
    ] = DEFAULT_MAX_CONNECTIONS_PER_HOST,
    max_pending_handshakes: Annotated[
        int, typer.Option(help="Connections that may be in their handshake at once.")
    ] = DEFAULT_MAX_PENDING_HANDSHAKES,
) -> None:
    """Run a name server in the foreground (what nameserver.sh does)."""
    setup_logging(logging.INFO)
    host, port = ns_of(host, port)
    host, port = host or DEFAULT_NS_HOST, DEFAULT_NS_PORT if port is None else port
    with _Signals() as signals:
        try:
            ns = EmbeddedNameServer(
                host,
                port,
                token=tokens.current_token(),
                storage=storage,
                accept_plain_token=accept_plain_token,
                handshake_timeout=handshake_timeout,
                max_connections_per_host=max_connections_per_host,
                max_pending_handshakes=max_pending_handshakes,
            )
            ns.start()
        except ConfigurationError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        except OSError as exc:
            raise fail(f"cannot start a name server on {host}:{port}: {exc}", EXIT_FAILED) from None
        try:
            kept = f"; names kept in {ns.storage}" if ns.storage else ""
            echo(f"name server at {ns.host}:{ns.port} ({ns.uri}){kept}")
            echo(f"clients: export PYROINST_NS_HOST={ns.host} PYROINST_NS_PORT={ns.port}")
            signals.wait()
        finally:
            ns.stop()


class _Signals:
    """SIGINT/SIGTERM as a flag, in place from the start: a signal that comes while the
    name server starts (or right after it said where it listens) still stops it cleanly."""

    def __enter__(self) -> _Signals:
        import signal

        self.stop = threading.Event()
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, lambda *_: self.stop.set())
        return self

    def wait(self) -> None:
        """Block until a signal came."""
        while not self.stop.wait(0.5):
            pass

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@app.command("serve")
def serve_command(
    lab: Annotated[Path | None, typer.Argument(help="Lab file (TOML).")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Serve two dummy devices, dev and dev2.")
    ] = False,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port of the device server (0: a free one).")
    ] = None,
    advertise: Annotated[
        str | None, typer.Option(help="Host name clients use to reach this server.")
    ] = None,
    ns_host: Annotated[str | None, typer.Option("--ns-host", help="Name server host.")] = None,
    ns_port: Annotated[int | None, typer.Option("--ns-port", help="Name server port.")] = None,
    accept_plain_token: Annotated[
        bool | None,
        typer.Option(
            "--accept-plain-token/--no-accept-plain-token",
            help="Also take the token sent as plain text by plain Pyro5 scripts (weaker).",
            show_default=False,
        ),
    ] = None,
    audit_log: Annotated[
        Path | None,
        typer.Option(help="Append one JSON line per remote action that can change something."),
    ] = None,
    audit_reads: Annotated[
        bool | None,
        typer.Option("--audit-reads", help="Log reads in the audit log too.", show_default=False),
    ] = None,
    handshake_timeout: Annotated[
        float | None, typer.Option(help="Seconds a new connection gets to authenticate (5).")
    ] = None,
    max_connections_per_host: Annotated[
        int | None, typer.Option(help="Connections one client address may hold (64).")
    ] = None,
    max_pending_handshakes: Annotated[
        int | None, typer.Option(help="Connections that may be in their handshake at once (256).")
    ] = None,
    max_queued_jobs: Annotated[
        int | None, typer.Option(help="Jobs one device may have waiting (1000).")
    ] = None,
) -> None:
    """Serve the devices of a lab file (or --demo) until Ctrl-C or SIGTERM.

    When no name server answers, an embedded one is started at the name server address.
    """
    if (lab is None) == (not demo):
        raise fail("give a lab file or --demo (not both)", EXIT_USAGE)
    try:
        config: LabConfig = demo_lab() if demo else load_lab(lab)  # type: ignore[arg-type]
        config.import_classes()
        config.configure_tls()
    except (LabFileError, ConfigurationError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if demo and config.log_level is None:
        config.log_level = "INFO"
    level = getattr(logging, config.log_level or "INFO")
    setup_logging(level)
    kwargs = dict(config.server)
    for key, value in (
        ("host", host),
        ("port", port),
        ("advertise", advertise),
        ("accept_plain_token", accept_plain_token),
        ("audit_log", None if audit_log is None else str(audit_log)),
        ("audit_reads", audit_reads),
        ("handshake_timeout", handshake_timeout),
        ("max_connections_per_host", max_connections_per_host),
        ("max_pending_handshakes", max_pending_handshakes),
        ("max_queued_jobs", max_queued_jobs),
    ):
        if value is not None:
            kwargs[key] = value
    nh, np_ = ns_of(ns_host, ns_port)
    if nh is not None:
        kwargs["ns_host"] = nh
    if np_ is not None:
        kwargs["ns_port"] = np_
    if "token_file" not in kwargs and tokens.current_token():
        kwargs["token"] = tokens.current_token()
    try:
        # Before the devices: a setting that cannot be used (an audit log that cannot be
        # written) stops here, with no instrument opened.
        server = InstServer(**kwargs)
    except ConfigurationError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    try:
        devices = config.create_devices()
    except DeviceStartError as exc:
        server.stop()
        raise fail(str(exc), EXIT_FAILED) from None
    if server.token:
        tokens.set_token(server.token)  # this process's own name-server calls carry it too
    try:
        for spec in config.devices:
            server.add_device(
                devices[spec.name],
                spec.name,
                jobs=spec.jobs or None,
                lock_timeout=spec.lock_timeout,
                stream_buffer_items=spec.stream_buffer_items,
                stream_buffer_bytes=spec.stream_buffer_bytes,
                max_queued_jobs=spec.max_queued_jobs,
                expose=spec.expose or None,
                hide=spec.hide or None,
                attributes=spec.attributes or None,
                profile=spec.profile,
            )
        # Blocks until Ctrl-C or SIGTERM; stopping removes the names and closes the devices,
        # also when starting fails.
        server.run(on_started=_print_serving)
    except (PyroinstError, OSError, Pyro5.errors.PyroError) as exc:
        server.stop()
        code = EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_FAILED
        raise fail(error_message(exc), code) from None


def _print_serving(server: InstServer) -> None:
    ns_where = server.ns_location  # the address in use, also when found by Pyro5's config
    embedded = " (embedded)" if server.embedded_ns is not None else ""
    echo(
        f"pyroinst {pyroinst.__version__} serving at {server.location}; "
        f"name server {ns_where}{embedded}"
    )
    for name, device in server.devices.items():
        cls = type(device)
        echo(f"  {name:12} {cls.__module__}.{cls.__qualname__:28} {server.uri(name)}")
    first = next(iter(server.devices), "dev")
    echo("connect with:")
    # The interpreter that runs this server has pyroinst: "python" may be another one.
    echo(
        f'  {shlex.quote(sys.executable)} -c "import Pyro5.api, pyroinst; dev = '
        f"Pyro5.api.Proxy('PYRONAME:{first}@{ns_where}'); print(dev.describe()['class'])\""
    )
    ns_host, _, ns_port = ns_where.rpartition(":")
    echo(f"  or: pyroinst --ns-host {ns_host} --ns-port {ns_port} info {first}")
    echo("Ctrl-C to stop.")
    sys.stdout.flush()


# -- clients --------------------------------------------------------------------------------

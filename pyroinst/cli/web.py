"""``pyroinst web``: the dashboard and HTTP API (needs ``pyroinst[web]``)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from pyroinst import tokens
from pyroinst.errors import ConfigurationError

from .app import EXIT_FAILED, EXIT_USAGE, app, echo, fail, ns_of, setup_logging

__all__ = ["web_command"]


@app.command("web")
def web_command(
    host: Annotated[str, typer.Option(help="Address to serve on (others need the token).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 8080,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Another host name this server answers to (a proxy in front); repeatable.",
        ),
    ] = None,
    max_streams: Annotated[
        int,
        typer.Option(help="Event streams one browser session (else address) may hold at once."),
    ] = 16,
    max_device_connections: Annotated[
        int, typer.Option(help="Connections this web server may hold to one device server.")
    ] = 16,
) -> None:
    """Serve the lab's dashboard and HTTP API until Ctrl-C (a client of the lab, like
    every command: any PC can run it)."""
    setup_logging(logging.INFO)
    try:
        from pyroinst.web.runner import WebServer
    except ImportError as exc:
        raise fail(
            f"pyroinst web needs the web extra ({exc.name} is missing): "
            "pip install 'pyroinst[web]'",
            EXIT_USAGE,
        ) from None
    ns_host, ns_port = ns_of(None, None)
    try:
        server = WebServer(
            host,
            port,
            ns_host,
            ns_port,
            tokens.current_token(),
            log_level="warning",
            allow_hosts=tuple(allow_host or ()),
            max_streams=max_streams,
            max_device_connections=max_device_connections,
        )
    except ConfigurationError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        raise fail(f"cannot serve on {host}:{port}: {exc}", EXIT_FAILED) from None
    echo(f"pyroinst web at {server.url}")
    if server.token:
        echo(f"log in with: {server.login_url}")
    echo("Ctrl-C to stop.")
    server.run()

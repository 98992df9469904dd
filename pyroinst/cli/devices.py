"""Device commands: list, info, call, reserve, release, ping."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Annotated, Any

import Pyro5.core
import typer
from typer.core import TyperCommand

import pyroinst
from pyroinst import naming
from pyroinst.arguments import convert_arguments, literal
from pyroinst.errors import (
    DeviceNotFound,
    DeviceUnreachable,
    NameServerNotFound,
    PyroinstError,
)
from pyroinst.liveness import DEFAULT_TIMEOUT, check_servers, server_key

from . import leases
from .app import (
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    JsonOpt,
    OutDirOpt,
    app,
    connect,
    echo,
    fail,
    guard,
    setup_logging,
    started,
    state,
)
from .live import check_out_dir, follow_items
from .output import Interrupts, check_out, emit_result, finish_job, follow, listing

__all__ = ["parse_call_args"]


@app.command("list")
def list_command(
    as_json: JsonOpt = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds the command may take, with every server checked.")
    ] = DEFAULT_TIMEOUT,
) -> None:
    """Every device the name server knows, across hosts, and whether it answers.

    Each server is asked once, all at once; --timeout counts from the command's start.
    """
    setup_logging(logging.WARNING)
    deadline = started() + timeout
    try:
        devices = pyroinst.list_devices(
            state.ns_host, state.ns_port, alive=True, timeout=timeout, deadline=deadline
        )
    except PyroinstError as exc:
        raise guard(exc) from None
    listing(
        devices,
        as_json,
        "no devices registered",
        ["name", "class", "host", "port", "alive", "uri"],
        lambda d: [
            d["name"],
            d["class"] or "?",
            d["host"],
            d["port"],
            "yes" if d["alive"] else f"NO ({d['reason']})",
            d["uri"],
        ],
    )


@app.command("info")
def info_command(
    device: str,
    as_json: JsonOpt = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds the device's server gets to answer.")
    ] = DEFAULT_TIMEOUT,
) -> None:
    """The device's docstring, methods (signatures, which are jobs), channels, active jobs."""
    setup_logging(logging.WARNING)
    try:
        uri = naming.lookup(device, state.ns_host, state.ns_port)
        parsed = Pyro5.core.URI(uri)
        entry = {"uri": uri, "host": parsed.host, "port": parsed.port}
        alive, reason = check_servers([entry], timeout)[server_key(entry)]
        if not alive:
            raise fail(f"device {device!r} ({uri}) does not answer: {reason}", EXIT_NOT_FOUND)
        dev = connect(device)
        info = dev.describe()
        active = [j for j in dev.job_list() if j["state"] in ("queued", "running")]
        info["reservation"] = dev.reservation()
        info["channels"] = dev.channels()
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        raise guard(exc) from None
    info["jobs"] = active
    if as_json:
        echo(json.dumps(info, indent=2, default=str))
        return
    echo(f"{info['name']}: {info['class']}")
    if info["doc"]:
        echo("")
        for line in info["doc"].splitlines():
            echo(f"  {line}")
    echo("\nmethods:")
    for m in info["methods"]:
        flags = " [job]" if m["job"] else (" [concurrent]" if m["concurrent"] else "")
        if m.get("monitor"):
            flags += f" [monitor every {m['monitor']:g} s]"
        echo(f"  {m['signature']}{flags}")
        if m["summary"]:
            echo(f"      {m['summary']}")
    if info["properties"]:
        echo("\nproperties:")
        for p in info["properties"]:
            echo(
                f"  {p['name']}{'' if p['writable'] else ' (read-only)'}  "
                f"{(p['doc'].splitlines() or [''])[0]}"
            )
    if info["channels"]:
        echo("\nchannels:")
        for c in info["channels"]:
            period = f"every {c['period']:g} s" if c["period"] else "published"
            last = (
                time.strftime("%H:%M:%S", time.localtime(c["last_time"]))
                if c["last_time"]
                else "never"
            )
            skipped = f", {c['skipped']} beats skipped (busy)" if c["skipped"] else ""
            echo(f"  {c['name']:16} {period:16} {c['published']} items, last {last}{skipped}")
    held = info["reservation"]
    if held:
        echo(f"\nreserved by {held['owner']} for {held['remaining_s']:.0f} more s")
    echo("\nactive jobs:" if active else "\nactive jobs: none")
    for j in active:
        echo(f"  {j['id']}  {j['method']:12} {j['state']:8} {j['progress']:.0%}")


def split_call_words(items: list[str]) -> tuple[list[str], dict[str, str]]:
    """CLI words as they were typed: positional ones, and ``KEY=VALUE`` keywords."""
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_]\w*", key):
            kwargs[key] = value
        else:
            args.append(item)
    return args, kwargs


def parse_call_args(items: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """CLI words to call arguments without a method to fit them to: Python literals, else
    strings; ``KEY=VALUE`` is a keyword. (``call`` converts by the method's annotations.)"""
    args, kwargs = split_call_words(items)
    return [literal(a) for a in args], {k: literal(v) for k, v in kwargs.items()}


_NEGATIVE_NUMBER = re.compile(r"-(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?j?|-inf|-nan")


class CallCommand(TyperCommand):
    """``pyroinst call``: a negative number among the arguments gets a hint, not just
    "No such option" (click reads ``-5`` as an option name)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse as typer does; explain what to do about negative numbers."""
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            # click's NoSuchOption, whether typer uses click or its own copy of it.
            name = getattr(exc, "option_name", None) or ""
            # click names only the first letters of "-5e3"; show the word as typed.
            name = next(
                (a for a in given if a.startswith(name) and _NEGATIVE_NUMBER.fullmatch(a)), name
            )
            if type(exc).__name__ == "NoSuchOption" and _NEGATIVE_NUMBER.fullmatch(name):
                exc.message = (
                    f"No such option: {name}. A negative number looks like an "
                    "option: put -- before the method's arguments, e.g. "
                    f"`pyroinst call DEV METHOD -- {name}` (options go before --)."
                )
            raise


@app.command("call", cls=CallCommand, context_settings={"allow_extra_args": False})
def call_command(
    device: str,
    method: str,
    args: Annotated[
        list[str] | None,
        typer.Argument(help="Arguments: Python literals (else strings); KEY=VALUE for keywords."),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Start a job, print only its id, exit.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait: for a plain call's reply, for a job to finish "
            "(default for a call: PYROINST_TIMEOUT, else 30)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write an array result (.npy, .csv, .txt).")
    ] = None,
    detach: Annotated[
        bool,
        typer.Option("--detach", help="On Ctrl-C leave the job running instead of cancelling it."),
    ] = False,
    follow_stream: Annotated[
        bool,
        typer.Option("--follow", help="Print each item a job publishes as it arrives."),
    ] = False,
    out_dir: OutDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Call a method; a job shows a progress bar, then its result. Ctrl-C cancels the job.

    --follow prints the job's published items as they come (JSON lines with --json).
    Negative numbers: put -- before the arguments (pyroinst call stage move -- -5).
    A method that returns None prints nothing.
    """
    setup_logging(logging.WARNING)
    pos, kw = split_call_words(args or [])
    if out is not None:
        check_out(out)  # before anything runs on the device
    if out_dir is not None:
        if not follow_stream:
            raise fail("--out-dir writes the items of --follow: add --follow", EXIT_USAGE)
        check_out_dir(out_dir)
    # The job handle's calls (status, cancel) wait no longer than the command's timeout.
    with pyroinst.client.default_timeout_set(timeout):
        _call(
            device, method, pos, kw, no_wait, timeout, out, detach, follow_stream, out_dir, as_json
        )


def _call(
    device: str,
    method: str,
    pos: list[Any],
    kw: dict[str, Any],
    no_wait: bool,
    timeout: float | None,
    out: Path | None,
    detach: bool,
    follow_stream: bool,
    out_dir: Path | None,
    as_json: bool,
) -> None:
    try:
        dev = connect(device, timeout)
        methods = {m["name"]: m for m in dev.describe()["methods"]}
        if method not in methods:
            raise fail(
                f"device {device!r} has no method {method!r}; its methods: "
                f"{', '.join(sorted(methods))}",
                EXIT_NOT_FOUND,
            )
        # By the method's annotations, before anything runs: "abc" for an int is refused.
        pos, kw = convert_arguments(methods[method], pos, kw, text=True, where=f"{device}.{method}")
        if no_wait:
            job = (
                getattr(dev, method)(*pos, **kw)
                if methods[method]["job"]
                else dev.job_start(method, *pos, **kw)
            )
            echo(job.id)
            return
        if methods[method]["job"]:
            with Interrupts() as interrupts:
                job = getattr(dev, method)(*pos, **kw)
                if follow_stream:
                    status = follow_items(job, out_dir, as_json, timeout, detach, interrupts)
                else:
                    status = follow(job, timeout, detach, state.verbose < 0, interrupts)
            finish_job(job, status, out, as_json, lines=follow_stream)
            return
        result = getattr(dev, method)(*pos, **kw)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001
        raise guard(exc) from None
    emit_result(
        result, out, as_json, {"device": device, "method": method, "job": None}, f"{method}()"
    )


@app.command("reserve")
def reserve_command(
    device: str,
    lease: Annotated[float, typer.Option(help="Seconds the reservation lasts.")] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Reserve DEV for --owner (others are refused until release or the lease ends)."""
    setup_logging(logging.WARNING)
    if not state.owner:
        raise fail("reserve needs --owner NAME (or PYROINST_OWNER)", EXIT_USAGE)
    try:
        info = connect(device).reserve(state.owner, lease)
    except Exception as exc:  # noqa: BLE001
        raise guard(exc) from None
    ns = (state.ns_host, state.ns_port)
    leases.remember(device, state.owner, ns, info.pop("lease"), info["until"])
    if as_json:
        echo(json.dumps(info, indent=2))
    else:
        echo(
            f"{device} reserved by {info['owner']} for {info['remaining_s']:.0f} s "
            f"(until {time.strftime('%H:%M:%S', time.localtime(info['until']))})"
        )


@app.command("release")
def release_command(device: str) -> None:
    """End --owner's reservation of DEV."""
    setup_logging(logging.WARNING)
    try:
        released = connect(device).release()
    except Exception as exc:  # noqa: BLE001
        raise guard(exc) from None
    if state.owner:
        leases.forget(device, state.owner, (state.ns_host, state.ns_port))
    echo(f"{device} released" if released else f"{device} was not reserved")


@app.command("ping")
def ping_command(
    device: Annotated[str | None, typer.Argument()] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            help="Keep trying for up to this many seconds (a server that is still starting).",
        ),
    ] = 0.0,
) -> None:
    """Check that the name server (no DEV) or a device answers; prints the round trip.

    With --wait S, a name server or device that is not there yet is asked again until it
    answers or S seconds pass (useful in scripts right after starting a server).
    """
    setup_logging(logging.WARNING)
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        start = time.perf_counter()
        try:
            if device is None:
                with pyroinst.locate_ns(state.ns_host, state.ns_port) as ns:
                    ns.ping()
                    where = naming.ns_location(ns)
                echo(f"name server {where}: ok ({(time.perf_counter() - start) * 1000:.1f} ms)")
                return
            dev = connect(device)
            dev._pyroTimeout = 5
            dev.ping()
            dev._pyroRelease()
            break
        except (DeviceNotFound, NameServerNotFound, DeviceUnreachable) as exc:
            if time.monotonic() >= deadline:
                raise guard(exc) from None
            time.sleep(0.2)
        except Exception as exc:  # noqa: BLE001
            raise guard(exc) from None
    echo(f"{device}: ok ({(time.perf_counter() - start) * 1000:.1f} ms)")

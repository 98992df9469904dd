"""The ``pyroinst`` command: run name servers and device servers, poke at devices.

Thin commands over the library. Exit codes:

  0    success (also ``serve``/``ns`` stopped by Ctrl-C or SIGTERM)
  1    the device raised, the job failed or was cancelled, or a server could not start
  2    usage error, including every lab-file error and arguments that do not fit a method
  3    device, method or job not found, or name server (or device server) unreachable
  130  a client command interrupted by Ctrl-C
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import Pyro5.errors
import typer

import pyroinst
from pyroinst import auth
from pyroinst import client as _client
from pyroinst.config import DeviceStartError, LabConfig, LabFileError, demo_lab, load_lab
from pyroinst.errors import (
    ConfigurationError,
    DeviceNotFound,
    DeviceUnreachable,
    JobCancelled,
    JobNotFound,
    NameServerNotFound,
    PyroinstError,
    SignatureError,
)
from pyroinst.nameserver import DEFAULT_NS_HOST, DEFAULT_NS_PORT, EmbeddedNameServer
from pyroinst.server import InstServer

__all__ = ["app", "main"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

_HELP = """Put a lab's instruments on the network (Pyro5); list, inspect and call them.

\b
Exit codes:
  0    success (also serve/ns stopped by Ctrl-C or SIGTERM)
  1    the device raised, the job failed or was cancelled, or a server could not start
  2    usage error, including every lab-file error and arguments that do not fit
  3    device, method or job not found, or name server / device server unreachable
  4    authentication failed (the lab's token is missing or wrong)
  130  a client command interrupted by Ctrl-C
"""

app = typer.Typer(
    name="pyroinst",
    help=_HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class _State:
    ns_host: str | None = None
    ns_port: int | None = None
    owner: str | None = None
    verbose = 0


state = _State()


def _out(text: str = "") -> None:
    typer.echo(text)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, LabFileError | SignatureError | ConfigurationError):
        return EXIT_USAGE
    if isinstance(exc, DeviceNotFound | JobNotFound | NameServerNotFound | DeviceUnreachable):
        return EXIT_NOT_FOUND
    if isinstance(exc, pyroinst.AuthenticationFailed):
        return EXIT_AUTH
    if isinstance(exc, Pyro5.errors.CommunicationError):
        return EXIT_NOT_FOUND
    if isinstance(exc, Pyro5.errors.NamingError):
        return EXIT_NOT_FOUND
    return EXIT_FAILED


def _message(exc: BaseException) -> str:
    if isinstance(exc, Pyro5.errors.CommunicationError):
        return f"device server unreachable: {exc}"
    if isinstance(exc, pyroinst.RemoteError):
        return str(exc)
    if isinstance(exc, PyroinstError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _guard(exc: BaseException) -> typer.Exit:
    """Turn an exception into the one-line error and exit code (traceback only with -v)."""
    if state.verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        remote = getattr(exc, "remote_traceback", None)
        if remote:
            typer.echo("remote traceback:\n" + remote, err=True)
    return _fail(_message(exc), _exit_code(exc))


def _setup_logging(default: int) -> None:
    level = logging.DEBUG if state.verbose else default
    if state.verbose < 0:
        level = logging.ERROR
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(level)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pyroinst {pyroinst.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
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
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
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
            raise _fail(str(exc), EXIT_USAGE) from None
    if token_file is not None:
        try:
            auth.set_token(auth.read_token_file(token_file))
        except ConfigurationError as exc:
            raise _fail(str(exc), EXIT_USAGE) from None
    state.verbose = 1 if verbose else (-1 if quiet else 0)


def _ns(host: str | None, port: int | None) -> tuple[str | None, int | None]:
    return host or state.ns_host, port if port is not None else state.ns_port


# -- servers ------------------------------------------------------------------------------
@app.command("ns")
def ns_command(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (env PYROINST_NS_HOST, default localhost).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (env PYROINST_NS_PORT, default 9090).")
    ] = None,
) -> None:
    """Run a name server in the foreground (what nameserver.sh does)."""
    _setup_logging(logging.INFO)
    host, port = _ns(host, port)
    host, port = host or DEFAULT_NS_HOST, DEFAULT_NS_PORT if port is None else port
    try:
        ns = EmbeddedNameServer(host, port, token=auth.current_token()).start()
    except OSError as exc:
        raise _fail(f"cannot start a name server on {host}:{port}: {exc}", EXIT_FAILED) from None
    _out(f"name server at {ns.host}:{ns.port} ({ns.uri})")
    _out(f"clients: export PYROINST_NS_HOST={ns.host} PYROINST_NS_PORT={ns.port}")
    _wait_for_signal()
    ns.stop()


def _wait_for_signal() -> None:
    import signal

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
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
) -> None:
    """Serve the devices of a lab file (or --demo) until Ctrl-C or SIGTERM.

    When no name server answers, an embedded one is started at the name server address.
    """
    if (lab is None) == (not demo):
        raise _fail("give a lab file or --demo (not both)", EXIT_USAGE)
    try:
        config: LabConfig = demo_lab() if demo else load_lab(lab)  # type: ignore[arg-type]
        config.import_classes()
        config.configure_tls()
    except (LabFileError, ConfigurationError) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if demo and config.log_level is None:
        config.log_level = "INFO"
    level = getattr(logging, config.log_level or "INFO")
    _setup_logging(level)
    kwargs = dict(config.server)
    for key, value in (("host", host), ("port", port), ("advertise", advertise)):
        if value is not None:
            kwargs[key] = value
    nh, np_ = _ns(ns_host, ns_port)
    if nh is not None:
        kwargs["ns_host"] = nh
    if np_ is not None:
        kwargs["ns_port"] = np_
    try:
        devices = config.create_devices()
    except DeviceStartError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    if "token_file" not in kwargs and auth.current_token():
        kwargs["token"] = auth.current_token()
    try:
        server = InstServer(**kwargs)
    except ConfigurationError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if server.token:
        auth.set_token(server.token)  # this process's own name-server calls carry it too
    try:
        for spec in config.devices:
            server.add_device(
                devices[spec.name],
                spec.name,
                jobs=spec.jobs or None,
                lock_timeout=spec.lock_timeout,
            )
        # Blocks until Ctrl-C or SIGTERM; stopping removes the names and closes the devices,
        # also when starting fails.
        server.run(on_started=_print_serving)
    except (PyroinstError, OSError, Pyro5.errors.PyroError) as exc:
        server.stop()
        code = EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_FAILED
        raise _fail(_message(exc), code) from None


def _print_serving(server: InstServer) -> None:
    ns_where = f"{server.ns_host}:{server.ns_port}"
    embedded = " (embedded)" if server.embedded_ns is not None else ""
    _out(
        f"pyroinst {pyroinst.__version__} serving at {server.location}; "
        f"name server {ns_where}{embedded}"
    )
    for name, device in server.devices.items():
        cls = type(device)
        _out(f"  {name:12} {cls.__module__}.{cls.__qualname__:28} {server.uri(name)}")
    first = next(iter(server.devices), "dev")
    _out("connect with:")
    _out(
        f"  python -c \"import Pyro5.api, pyroinst; dev = Pyro5.api.Proxy('PYRONAME:{first}@"
        f"{ns_where}'); print(dev.describe()['class'])\""
    )
    _out("Ctrl-C to stop.")
    sys.stdout.flush()


# -- clients --------------------------------------------------------------------------------
def _connect(name: str) -> Any:
    return pyroinst.connect(name, ns_host=state.ns_host, ns_port=state.ns_port, owner=state.owner)


def _alive(uri: str, timeout: float = 1.0) -> bool:
    import Pyro5.client

    proxy = Pyro5.client.Proxy(uri)
    proxy._pyroTimeout = timeout
    try:
        return bool(proxy.ping())
    except Exception:  # noqa: BLE001 - anything but an answer means "not reachable"
        return False
    finally:
        proxy._pyroRelease()


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("list")
def list_command(as_json: JsonOpt = False) -> None:
    """Every device the name server knows, across hosts, and whether it answers."""
    _setup_logging(logging.WARNING)
    try:
        devices = pyroinst.list_devices(state.ns_host, state.ns_port)
    except PyroinstError as exc:
        raise _guard(exc) from None
    for d in devices:
        d["alive"] = _alive(d["uri"])
    if as_json:
        _out(json.dumps(devices, indent=2))
        return
    if not devices:
        _out("no devices registered")
        return
    _table(
        ["name", "class", "host", "port", "alive", "uri"],
        [
            [
                d["name"],
                d["class"] or "?",
                d["host"],
                d["port"],
                "yes" if d["alive"] else "NO",
                d["uri"],
            ]
            for d in devices
        ],
    )


def _table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        _out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@app.command("info")
def info_command(device: str, as_json: JsonOpt = False) -> None:
    """The device's docstring, methods (signatures, which are jobs) and active jobs."""
    _setup_logging(logging.WARNING)
    try:
        dev = _connect(device)
        info = dev.describe()
        active = [j for j in dev.job_list() if j["state"] in ("queued", "running")]
        info["reservation"] = dev.reservation()
    except Exception as exc:  # noqa: BLE001
        raise _guard(exc) from None
    info["jobs"] = active
    if as_json:
        _out(json.dumps(info, indent=2, default=str))
        return
    _out(f"{info['name']}: {info['class']}")
    if info["doc"]:
        _out("")
        for line in info["doc"].splitlines():
            _out(f"  {line}")
    _out("\nmethods:")
    for m in info["methods"]:
        flags = " [job]" if m["job"] else (" [concurrent]" if m["concurrent"] else "")
        _out(f"  {m['signature']}{flags}")
        if m["summary"]:
            _out(f"      {m['summary']}")
    if info["properties"]:
        _out("\nproperties:")
        for p in info["properties"]:
            _out(
                f"  {p['name']}{'' if p['writable'] else ' (read-only)'}  "
                f"{(p['doc'].splitlines() or [''])[0]}"
            )
    held = info["reservation"]
    if held:
        _out(f"\nreserved by {held['owner']} for {held['remaining_s']:.0f} more s")
    _out("\nactive jobs:" if active else "\nactive jobs: none")
    for j in active:
        _out(f"  {j['id']}  {j['method']:12} {j['state']:8} {j['progress']:.0%}")


def parse_call_args(items: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """CLI words to call arguments: Python literals, else strings; ``KEY=VALUE`` is a keyword."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_]\w*", key):
            kwargs[key] = _literal(value)
        else:
            args.append(_literal(item))
    return args, kwargs


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _jsonable(value: Any, out: Path | None = None) -> Any:
    if isinstance(value, np.ndarray):
        return {**_array_summary(value), "out": str(out) if out else None}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
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


def _array_summary(a: np.ndarray) -> dict[str, Any]:
    summary: dict[str, Any] = {"dtype": str(a.dtype), "shape": list(a.shape)}
    if a.size and (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        real = a.real if np.iscomplexobj(a) else a
        summary.update(min=float(np.min(real)), max=float(np.max(real)), mean=float(np.mean(real)))
    return summary


def _print_result(value: Any) -> None:
    if isinstance(value, np.ndarray):
        s = _array_summary(value)
        stats = (
            f", min {s['min']:.6g}, max {s['max']:.6g}, mean {s['mean']:.6g}" if "min" in s else ""
        )
        _out(f"array dtype {s['dtype']}, shape {tuple(s['shape'])}{stats}")
    elif isinstance(value, str):
        _out(value)
    else:
        _out(repr(value))


def _write_out(value: Any, out: Path) -> None:
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001
        array = None
    if array is None or array.dtype == object:
        raise _fail(f"--out needs an array result, got {type(value).__name__}", EXIT_USAGE)
    suffix = out.suffix.lower()
    try:
        if suffix == ".npy":
            np.save(out, array)
        elif suffix in (".csv", ".txt"):
            if array.ndim not in (1, 2):
                raise _fail(
                    f"{suffix} files hold 1-d or 2-d arrays; this one is {array.ndim}-d: use .npy",
                    EXIT_USAGE,
                )
            np.savetxt(out, array, delimiter="," if suffix == ".csv" else " ")
        else:
            raise _fail(f"--out {out}: use a .npy, .csv or .txt file name", EXIT_USAGE)
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror}", EXIT_FAILED) from None


class _Interrupts:
    """Ctrl-C as a flag, not an exception, while a client command talks to a server.

    A KeyboardInterrupt raised inside a Pyro5 call would tear its connection down
    mid-message and could lose the id of a job just started; with the flag, the call in
    progress completes and the command then cancels (or leaves) the job and exits 130.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> _Interrupts:
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


def _follow(
    job: pyroinst.JobHandle,
    timeout: float | None,
    detach: bool,
    quiet: bool,
    interrupts: _Interrupts,
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
        console=_stderr_console(),
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
                raise _fail(
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


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _finish_job(job: pyroinst.JobHandle, status: dict, out: Path | None, as_json: bool) -> None:
    try:
        value = job.result(timeout=0)  # raises the job's error, or JobCancelled
    except Exception as exc:  # noqa: BLE001
        if as_json:
            _out(json.dumps({**status, "result": None}, indent=2, default=str))
        if isinstance(exc, JobCancelled):
            raise _fail(f"job {job.id} ({status['method']}) was cancelled", EXIT_FAILED) from None
        raise _guard(exc) from None
    _emit_result(value, out, as_json, status)


def _emit_result(value: Any, out: Path | None, as_json: bool, status: dict | None) -> None:
    if out is not None:
        _write_out(value, out)
    if as_json:
        doc = dict(status or {})
        doc["result"] = _jsonable(value, out)
        _out(json.dumps(doc, indent=2, default=str))
    else:
        _print_result(value)
        if out is not None:
            typer.echo(f"written to {out}", err=True)


@app.command("call", context_settings={"allow_extra_args": False})
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
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for a job.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write an array result (.npy, .csv, .txt).")
    ] = None,
    detach: Annotated[
        bool,
        typer.Option("--detach", help="On Ctrl-C leave the job running instead of cancelling it."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Call a method; a job shows a progress bar, then its result. Ctrl-C cancels the job."""
    _setup_logging(logging.WARNING)
    pos, kw = parse_call_args(args or [])
    try:
        dev = _connect(device)
        methods = {m["name"]: m for m in dev.describe()["methods"]}
        if method not in methods:
            raise _fail(
                f"device {device!r} has no method {method!r}; its methods: "
                f"{', '.join(sorted(methods))}",
                EXIT_NOT_FOUND,
            )
        if no_wait:
            job = (
                getattr(dev, method)(*pos, **kw)
                if methods[method]["job"]
                else dev.job_start(method, *pos, **kw)
            )
            _out(job.id)
            return
        if methods[method]["job"]:
            with _Interrupts() as interrupts:
                job = getattr(dev, method)(*pos, **kw)
                status = _follow(job, timeout, detach, state.verbose < 0, interrupts)
            _finish_job(job, status, out, as_json)
            return
        result = getattr(dev, method)(*pos, **kw)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001
        raise _guard(exc) from None
    _emit_result(result, out, as_json, {"device": device, "method": method, "job": None})


@app.command("jobs")
def jobs_command(device: str, as_json: JsonOpt = False) -> None:
    """The device's kept jobs, newest first."""
    _setup_logging(logging.WARNING)
    try:
        jobs = _connect(device).job_list()
    except Exception as exc:  # noqa: BLE001
        raise _guard(exc) from None
    if as_json:
        _out(json.dumps(jobs, indent=2))
        return
    if not jobs:
        _out("no jobs")
        return
    _table(
        ["id", "method", "state", "progress", "created", "error"],
        [
            [
                j["id"],
                j["method"],
                j["state"],
                f"{j['progress']:.0%}",
                time.strftime("%H:%M:%S", time.localtime(j["created"])),
                j["error"] or "",
            ]
            for j in jobs
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
    as_json: JsonOpt = False,
) -> None:
    """One job: its status; --wait for its result, --cancel to stop it."""
    _setup_logging(logging.WARNING)
    try:
        dev = _connect(device)
        status = dev.job_status(job_id)
        job = pyroinst.JobHandle(job_id, device, str(dev._pyroUri))
        if cancel:
            cancelled = job.cancel()
            job.wait(timeout=5)
            status = job.status()
            if not as_json:
                _out(
                    f"job {job_id}: {'cancel requested' if cancelled else 'already finished'}"
                    f"; now {status['state']}"
                )
            else:
                _out(json.dumps({**status, "cancelled": cancelled}, indent=2))
            return
        if wait:
            with _Interrupts() as interrupts:
                status = _follow(job, None, True, state.verbose < 0, interrupts)
        if status["state"] in ("done", "failed", "cancelled") and (wait or out is not None):
            _finish_job(job, status, out, as_json)
            return
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _guard(exc) from None
    if as_json:
        _out(json.dumps(status, indent=2))
        return
    _out(
        f"job {status['id']}  {status['method']}  {status['state']}  {status['progress']:.0%}"
        f"{'  ' + status['message'] if status['message'] else ''}"
    )
    if status["error"]:
        _out(f"error: {status['error']}")


@app.command("reserve")
def reserve_command(
    device: str,
    lease: Annotated[float, typer.Option(help="Seconds the reservation lasts.")] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Reserve DEV for --owner (others are refused until release or the lease ends)."""
    _setup_logging(logging.WARNING)
    if not state.owner:
        raise _fail("reserve needs --owner NAME (or PYROINST_OWNER)", EXIT_USAGE)
    try:
        info = _connect(device).reserve(state.owner, lease)
    except Exception as exc:  # noqa: BLE001
        raise _guard(exc) from None
    if as_json:
        _out(json.dumps(info, indent=2))
    else:
        _out(
            f"{device} reserved by {info['owner']} for {info['remaining_s']:.0f} s "
            f"(until {time.strftime('%H:%M:%S', time.localtime(info['until']))})"
        )


@app.command("release")
def release_command(device: str) -> None:
    """End --owner's reservation of DEV."""
    _setup_logging(logging.WARNING)
    try:
        released = _connect(device).release()
    except Exception as exc:  # noqa: BLE001
        raise _guard(exc) from None
    _out(f"{device} released" if released else f"{device} was not reserved")


@app.command("ping")
def ping_command(device: Annotated[str | None, typer.Argument()] = None) -> None:
    """Check that the name server (no DEV) or a device answers; prints the round trip."""
    _setup_logging(logging.WARNING)
    start = time.perf_counter()
    try:
        if device is None:
            with pyroinst.locate_ns(state.ns_host, state.ns_port) as ns:
                ns.ping()
                where = _client._ns_location(ns)
            _out(f"name server {where}: ok ({(time.perf_counter() - start) * 1000:.1f} ms)")
            return
        dev = _connect(device)
        dev._pyroTimeout = 5
        dev.ping()
    except Exception as exc:  # noqa: BLE001
        raise _guard(exc) from None
    _out(f"{device}: ok ({(time.perf_counter() - start) * 1000:.1f} ms)")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

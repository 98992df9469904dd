"""Test helpers: polling with a deadline, test drivers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import pyroinst

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without PYRO_*/PYROINST_* settings, for a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYRO_", "PYROINST_"))}
    env["PYTHONPATH"] = str(ROOT)
    if os.environ.get("PYROINST_STATE_DIR"):  # the tests' state folder (conftest)
        env["PYROINST_STATE_DIR"] = os.environ["PYROINST_STATE_DIR"]
    env.update(extra)
    return env


def run_python(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python ARGS`` (``-c CODE`` or ``-m MODULE``) from the checkout, output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def counted_nap(device: Any, seconds: float) -> None:
    """Sleep ``seconds`` inside ``device``: its ``inside`` counts the calls in at once and
    ``most`` keeps the highest count (under its ``_lock``), to show calls overlapping."""
    with device._lock:
        device.inside += 1
        device.most = max(device.most, device.inside)
    try:
        time.sleep(seconds)
    finally:
        with device._lock:
            device.inside -= 1


def serve_process(ns: Any, *args: str, **popen: Any) -> subprocess.Popen:
    """``pyroinst serve ARGS`` in a process of its own, registering with the name server
    ``ns`` (``popen``: Popen's other arguments). ``stop_process`` ends it."""
    popen.setdefault("env", clean_env())
    return subprocess.Popen(
        [sys.executable, "-m", "pyroinst", "--ns-host", ns.host, "--ns-port", str(ns.port)]
        + ["serve", *args],
        cwd=ROOT,
        **popen,
    )


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Ask ``proc`` to end (SIGTERM), and kill it if it has not within ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start_fuzz_target(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, list[str]]:
    """Start tests.fuzz_target (a name server and a device server; ``args`` are its
    options); its READY fields.

    Its log goes to a file (``proc.log``, a path), not a pipe: a pipe nobody reads
    would fill up and stop the server mid-test.
    """
    fd, log_path = tempfile.mkstemp(suffix=".log")
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz_target", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    proc.log = log_path  # type: ignore[attr-defined]
    fields = proc.stdout.readline().split()
    assert fields and fields[0] == "READY", Path(log_path).read_text()
    return proc, fields[1:]


def stop_fuzz_target(proc: subprocess.Popen) -> list[str]:
    """Stop a server started by ``start_fuzz_target``; the ERROR, CRITICAL and traceback
    lines of its log (a hostile-input test expects none)."""
    proc.stdin.close()
    proc.wait(30)
    log = Path(proc.log).read_text()  # type: ignore[attr-defined]
    Path(proc.log).unlink()  # type: ignore[attr-defined]
    return [
        line
        for line in log.splitlines()
        if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line
    ]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def in_threads(count: int, work: Callable[[int], Any], timeout: float = 60.0) -> dict[int, Any]:
    """``work(k)`` for k in range(count), each in a thread of its own, all at once: what
    each returned, by k. Fails with the errors if any raised (or did not end in time)."""
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            results[k] = work(k)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "threads still running"
    return results


class DriverError(Exception):
    """A driver's own exception class, which clients cannot import."""


class RangeError(ValueError):
    """A driver's own exception deriving from a built-in."""


class Unsendable:
    """Something no serializer can send faithfully."""

    def __init__(self) -> None:
        self.x = 1


class Echo:
    """Returns what it is given; raises on request."""

    def __init__(self) -> None:
        self.closed = False
        self._temperature = 21.5
        self.gate = threading.Event()
        self.stored: Any = None

    def echo(self, value: Any) -> Any:
        """Return ``value``."""
        return value

    def upload_info(self, a: np.ndarray) -> dict[str, Any]:
        """How an uploaded array arrived: annotation keys of the request, flags, shape."""
        from Pyro5.callcontext import current_context

        return {
            "keys": pyroinst.fastwire.received_array_keys(),
            "context_keys": sorted(k for k in current_context.annotations if k[0] in "~^"),
            "writeable": bool(a.flags.writeable),
            "aligned": bool(a.flags.aligned),
            "shape": list(a.shape),
            "sum": float(a.sum()),
        }

    def store(self, value: Any) -> None:
        """Keep ``value`` (for oneway calls: the test reads ``stored``)."""
        self.stored = value

    def last_stored(self) -> Any:
        """What ``store`` kept last."""
        return self.stored

    def seen(self) -> dict[str, Any]:
        """What this call brought besides its arguments: annotations and array keys."""
        from Pyro5.callcontext import current_context

        return {
            "annotations": sorted(current_context.annotations),
            "arrays": pyroinst.fastwire.received_array_keys(),
        }

    def scalars(self) -> dict[str, Any]:
        """numpy scalars of several kinds."""
        return {
            "f64": np.float64(1.5),
            "f32": np.float32(2.5),
            "i64": np.int64(-3),
            "u8": np.uint8(7),
            "b": np.bool_(True),
            "c": np.complex128(1 + 2j),
            "nested": [np.int32(4), (np.float16(0.5),)],
        }

    def sleep(self, seconds: float) -> float:
        """A slow plain call."""
        time.sleep(seconds)
        return seconds

    def fail(self, message: str = "boom") -> None:
        """Raise the driver's own exception."""
        raise DriverError(message)

    def out_of_range(self) -> None:
        """Raise a driver exception derived from ValueError."""
        raise RangeError("value out of range")

    def builtin_fail(self) -> None:
        """Raise a built-in exception."""
        raise KeyError("missing")

    def unsendable(self) -> Unsendable:
        """Return something that cannot be sent."""
        return Unsendable()

    @pyroinst.job
    def failing_job(self, message: str = "job boom") -> None:
        """A job that fails."""
        raise DriverError(message)

    @pyroinst.job
    def hold(self, seconds: float = 10.0) -> str:
        """A job that runs until cancelled or ``seconds`` pass, or the gate opens."""
        ctx = pyroinst.current_job()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.gate.is_set():
            ctx.sleep(0.01)
        return "held"

    @pyroinst.job
    def failing_builtin_job(self, message: str = "bad value") -> None:
        """A job that fails with a built-in exception."""
        raise ValueError(message)

    @pyroinst.job
    def hold_array(self, seconds: float = 10.0) -> np.ndarray:
        """Like ``hold``, then returns a small array."""
        self.hold(seconds)
        return np.arange(10.0)

    @pyroinst.job
    def big(self, n: int) -> np.ndarray:
        """A job returning ``n`` float64 points."""
        return np.arange(n, dtype=np.float64)

    @pyroinst.concurrent
    def cached(self) -> str:
        """Answers without the device lock."""
        return "cached"

    @property
    def temperature(self) -> float:
        """A read/write property."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = float(value)

    def close(self) -> None:
        """Mark closed."""
        self.closed = True


class Beating:
    """A driver with a fast monitor that counts its beats."""

    def __init__(self) -> None:
        self.beats = 0
        self.closed = False

    @pyroinst.monitor(period=0.02)
    def beat(self) -> int:
        """Count a beat."""
        self.beats += 1
        return self.beats

    def close(self) -> None:
        """Mark closed."""
        self.closed = True


class Publisher:
    """A driver whose channels exist only once something was published on them, and
    whose job publishes some items, waits at a gate, then publishes more."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def announce(self, channel: str, value: Any) -> None:
        """Publish ``value`` on ``channel`` (made by this first publish)."""
        pyroinst.publish(self, channel, value)

    @pyroinst.concurrent
    def open_gate(self) -> None:
        """Let a waiting ``emit`` go on."""
        self.gate.set()

    @pyroinst.job
    def emit(self, before: int, after: int) -> int:
        """Publish 0..before-1, wait for the gate, publish before..before+after-1."""
        ctx = pyroinst.current_job()
        for i in range(before):
            ctx.publish(i)
        while not self.gate.is_set():
            ctx.sleep(0.01)
        for i in range(before, before + after):
            ctx.publish(i)
        return before + after

    @pyroinst.job
    def pool_frames(self, frames: int, pool: int, size: int) -> int:
        """Publish ``frames`` frames that are views of a pool of ``pool`` frames."""
        ring = np.zeros((pool, size), dtype=np.uint8)
        ctx = pyroinst.current_job()
        for i in range(frames):
            ctx.publish(ring[i % pool])
        return frames

    def snapshot(self) -> dict[str, Any]:
        """A QCoDeS-like snapshot: dicts with "__class__" keys."""
        return {
            "__class__": "qcodes.instrument_drivers.mock.DummyInstrument",
            "name": "dac",
            "parameters": {"ch1": {"__class__": "qcodes.parameters.Parameter", "value": 0.5}},
        }

    def out_of_range(self) -> None:
        """Raise a built-in exception carrying a numpy scalar."""
        raise ValueError("out of range", np.float32(12.5))

    @property
    def voltage(self) -> float:
        """A read-only property."""
        return 1.5


class Clashing:
    """A driver whose method collides with a reserved name."""

    def ping(self) -> str:
        """Collides."""
        return "pong"


class ThirdParty:
    """A driver without pyroinst decorators."""

    def acquire(self, n: int) -> list[int]:
        """Long acquisition."""
        return list(range(n))


class Relay:
    """A driver that calls another device itself (devices that use devices)."""

    def relay(self, uri: str, payload: Any = None) -> dict[str, Any]:
        """Call ``seen()`` on the device at ``uri`` with a plain Pyro5 proxy."""
        import Pyro5.api

        with Pyro5.api.Proxy(uri) as other:
            return other.seen()


class Marker:
    """A driver that leaves a file behind when it is created (to see whether it was)."""

    def __init__(self, path: str) -> None:
        Path(path).write_text("created")

    def close(self) -> None:
        """Nothing to close."""


@contextlib.contextmanager
def lab_token(token: str | None):
    """This process proves ``token`` inside; the token it had, after (cached proxies dropped)."""
    before = pyroinst.current_token()
    pyroinst.set_token(token)
    try:
        yield
    finally:
        pyroinst.set_token(before)
        pyroinst.client.release_cached_proxies()


@contextlib.contextmanager
def web_lab(token: str, devices: dict[str, Any], **options: Any):
    """A name server and a device server with ``token`` serving ``devices`` (name -> driver,
    or (driver, add_device keywords)), and ``pyroinst web`` in front: (ns, server, web)."""
    from pyroinst import EmbeddedNameServer, InstServer
    from pyroinst.web.runner import WebServer

    with lab_token(token), EmbeddedNameServer("127.0.0.1", 0, token=token) as ns:
        server = InstServer(ns_host=ns.host, ns_port=ns.port, token=token, heartbeat=0, **options)
        for name, device in devices.items():
            driver, keywords = device if isinstance(device, tuple) else (device, {})
            server.add_device(driver, name, **keywords)
        with server, WebServer("127.0.0.1", 0, ns.host, ns.port, token) as web:
            yield ns, server, web

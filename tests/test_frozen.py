"""A frozen instrument PC (its server under SIGSTOP) never hangs a client.

One lab for the module: a name server in this process (it keeps answering, as the lab's
name server PC would) and ``pyroinst serve --demo`` in its own process, frozen with
SIGSTOP once a job is running and a channel is being watched. Every client operation
must then return with a clear error naming the server within its timeout + 2 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import pyroinst
from pyroinst import EmbeddedNameServer
from tests.helpers import ROOT, clean_env, serve_process, stop_process, wait_until

TIMEOUT = 2.0
ALLOWED = TIMEOUT + 2.0


class Frozen:
    def __init__(self, ns: EmbeddedNameServer, proc: subprocess.Popen) -> None:
        self.ns = ns
        self.proc = proc
        self.env = clean_env(PYROINST_NS_HOST=ns.host, PYROINST_NS_PORT=str(ns.port))
        self.address = ""

    def cli(self, *args: str) -> tuple[subprocess.CompletedProcess, float]:
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pyroinst", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done, time.monotonic() - began


@pytest.fixture(scope="module")
def frozen():
    ns = EmbeddedNameServer("127.0.0.1", 0).start()
    log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)  # noqa: SIM115
    proc = serve_process(
        ns, "--demo", stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL
    )
    lab = Frozen(ns, proc)
    try:
        names = lambda: {d["name"] for d in pyroinst.list_devices(ns.host, ns.port)}  # noqa: E731
        wait_until(lambda: {"dev", "dev2"} <= names(), timeout=30)
        dev = pyroinst.connect("dev", ns.host, ns.port, timeout=TIMEOUT, reconnect_timeout=TIMEOUT)
        lab.dev = dev
        lab.job = dev.measure(600_000)  # ten minutes: running when the PC freezes
        wait_until(lambda: lab.job.status()["state"] == "running")
        lab.job.wait(timeout=0.01)  # the handle's connection exists before the freeze
        lab.stream = dev.watch("temperature", start=0)
        next(lab.stream)
        lab.address = str(dev._pyroUri).rsplit("@", 1)[1]
        os.kill(proc.pid, signal.SIGSTOP)
        yield lab
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stop_process(proc)
        for closing in (getattr(lab, "stream", None), getattr(lab, "dev", None)):
            if closing is not None:
                try:
                    closing.close() if hasattr(closing, "close") else None
                except Exception:  # noqa: BLE001 - the server is gone: nothing to tidy
                    pass
        pyroinst.client.release_cached_proxies()
        ns.stop()
        log.close()
        Path(log.name).unlink()


def timed(call):
    began = time.monotonic()
    with pytest.raises(pyroinst.PyroinstError) as caught:
        call()
    return caught.value, time.monotonic() - began


def test_a_plain_call_through_connect(frozen):
    dev = pyroinst.connect("dev", frozen.ns.host, frozen.ns.port, timeout=TIMEOUT)
    try:
        error, took = timed(lambda: dev.idn())
    finally:
        dev._pyroRelease()
    assert isinstance(error, pyroinst.DeviceUnreachable), error
    assert took <= ALLOWED, took
    assert "stopped answering" in str(error) and frozen.address in str(error)


def test_a_call_on_an_open_connection(frozen):
    error, took = timed(lambda: frozen.dev.ping())
    assert isinstance(error, pyroinst.DeviceUnreachable), error
    assert took <= ALLOWED, took
    assert "stopped answering" in str(error) and frozen.address in str(error)


def test_job_wait_and_result(frozen):
    error, took = timed(lambda: frozen.job.wait(timeout=TIMEOUT))
    assert isinstance(error, pyroinst.DeviceUnreachable), error
    assert took <= ALLOWED, took
    error, took = timed(lambda: frozen.job.result(timeout=TIMEOUT))
    assert isinstance(error, pyroinst.DeviceUnreachable), error
    assert took <= ALLOWED, took
    assert frozen.address in str(error)


def test_another_thread_and_asyncio(frozen):
    """The thread-free proxy from another thread, and pyroinst.aio, are bounded too."""
    import asyncio
    import concurrent.futures

    import pyroinst.aio

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        error, took = pool.submit(timed, lambda: frozen.dev.ping()).result(30)
    assert isinstance(error, pyroinst.DeviceUnreachable), error
    assert took <= ALLOWED, took

    async def awaited(make):
        began = time.monotonic()
        with pytest.raises(pyroinst.PyroinstError) as caught:
            await make()
        return caught.value, time.monotonic() - began

    async def main():
        results = [await awaited(lambda: frozen.job.wait_async(TIMEOUT))]
        results.append(await awaited(lambda: frozen.job))
        dev = pyroinst.aio.AsyncDeviceProxy(frozen.dev)
        results.append(await awaited(lambda: dev.idn()))
        return results

    for error, took in asyncio.run(main()):
        assert isinstance(error, pyroinst.DeviceUnreachable), error
        assert took <= ALLOWED, took
        assert frozen.address in str(error)


def test_watch(frozen):
    began = time.monotonic()
    with pytest.raises(pyroinst.DeviceUnreachable) as caught:
        for _ in frozen.stream:
            pass  # the items kept before the freeze, then nothing
    took = time.monotonic() - began
    assert took <= ALLOWED, took  # reconnect_timeout is TIMEOUT here
    assert "stopped answering" in str(caught.value)


@pytest.mark.parametrize("follow", [False, True], ids=["call", "follow"])
def test_the_command_line(frozen, follow):
    args = ["call", "dev", "measure", "100", "--timeout", str(TIMEOUT)]
    done, took = frozen.cli(*args, *(["--follow"] if follow else []))
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert took <= ALLOWED + 1.0, took  # + the interpreter's start
    assert "stopped answering" in done.stderr and frozen.address in done.stderr
    done, took = frozen.cli("call", "dev", "idn", "--timeout", str(TIMEOUT))
    assert done.returncode == 3 and "stopped answering" in done.stderr
    assert took <= ALLOWED + 1.0, took

"""The pyroinst command as real processes: serve, list, info, call, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyroinst
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
PYROINST = [sys.executable, "-m", "pyroinst"]


def env() -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYRO_", "PYROINST_")) or k == "PYROINST_STATE_DIR"
    }
    clean["PYTHONPATH"] = str(ROOT)
    return clean


def names(host, port):
    with pyroinst.locate_ns(host, port) as nsp:
        return set(nsp.yplookup(meta_all={"pyroinst.device"}, return_metadata=False))


class Serve:
    """`pyroinst serve ...` in the background; always stopped."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*PYROINST, "serve", *args],
            env=env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self, sig=signal.SIGINT) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err


@pytest.fixture
def serve():
    started = []

    def start(*args):
        s = Serve(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(signal.SIGKILL)


def run(*args: str, ns=None, timeout=60) -> subprocess.CompletedProcess:
    opts = ["--ns-host", ns[0], "--ns-port", str(ns[1])] if ns else []
    return subprocess.run(
        [*PYROINST, *opts, *args],
        env=env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_demo_list_info_call_and_sigint(ns, serve, tmp_path):
    where = (ns.host, ns.port)
    server = serve("--demo", "--ns-host", ns.host, "--ns-port", str(ns.port))
    wait_until(lambda: names(*where) == {"dev", "dev2"}, timeout=30)

    listed = run("list", "--json", ns=where)
    assert listed.returncode == 0, listed.stderr
    devices = {d["name"]: d for d in json.loads(listed.stdout)}
    assert set(devices) == {"dev", "dev2"} and devices["dev"]["alive"] is True

    info = run("info", "dev", ns=where)
    assert info.returncode == 0 and "measure(time: int)" in info.stdout

    out = tmp_path / "m.npy"
    called = run("call", "dev", "measure", "200", "--out", str(out), ns=where)
    assert called.returncode == 0, called.stderr
    data = np.load(out)
    assert data.shape == (200,) and data.dtype == np.float64

    idn = run("call", "dev", "idn", ns=where)
    assert idn.returncode == 0 and idn.stdout.startswith("pyroinst,DummyDevice,")

    code, stdout, _ = server.stop(signal.SIGINT)
    assert code == 0
    assert "PYRONAME:dev@" in stdout  # the line to paste
    assert names(*where) == set()


def test_serve_demo_embeds_name_server(serve):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve("--demo", "--ns-host", "127.0.0.1", "--ns-port", str(port))
    wait_until(lambda: run("ping", "dev", ns=("127.0.0.1", port)).returncode == 0, timeout=30)
    code, stdout, _ = server.stop(signal.SIGTERM)
    assert code == 0 and "(embedded)" in stdout


def test_lab_file_serves_two_devices_of_one_class(ns, serve):
    where = (ns.host, ns.port)
    serve(str(ROOT / "examples" / "lab.toml"), "--ns-host", ns.host, "--ns-port", str(ns.port))
    wait_until(lambda: names(*where) == {"dev", "dev2"}, timeout=30)
    one = run("call", "dev", "idn", ns=where).stdout
    two = run("call", "dev2", "idn", ns=where).stdout
    assert one.startswith("pyroinst,DummyDevice,") and two.startswith("pyroinst,DummyDevice,")
    assert one != two


def test_ctrl_c_while_waiting_cancels_the_job(ns, serve):
    where = (ns.host, ns.port)
    serve("--demo", "--ns-host", ns.host, "--ns-port", str(ns.port))
    wait_until(lambda: names(*where) == {"dev", "dev2"}, timeout=30)
    client = subprocess.Popen(
        [
            *PYROINST,
            "--ns-host",
            ns.host,
            "--ns-port",
            str(ns.port),
            "call",
            "dev",
            "measure",
            "60000",
        ],
        env=env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    dev = pyroinst.connect("dev", ns_host=ns.host, ns_port=ns.port)
    wait_until(lambda: any(j["state"] == "running" for j in dev.job_list()), timeout=30)
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=30)
    assert client.returncode == 130, err
    assert "cancelled" in err
    wait_until(lambda: dev.job_list()[0]["state"] == "cancelled", timeout=10)
    dev._pyroRelease()


def test_nameserver_script(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = env()
    e.update(PYROINST_NS_HOST="127.0.0.1", PYROINST_NS_PORT=str(port), PYTHON=sys.executable)
    usage = subprocess.run(
        ["bash", str(ROOT / "nameserver.sh"), "-h"],
        env=e,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert usage.returncode == 0 and "usage" in usage.stdout
    proc = subprocess.Popen(
        ["bash", str(ROOT / "nameserver.sh")],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: run("ping", ns=("127.0.0.1", port)).returncode == 0, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0

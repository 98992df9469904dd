"""`pyroinst ns --storage`: names survive a name-server restart; bad storage is refused."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import pyroinst
from pyroinst.cli import app
from tests.helpers import ROOT, clean_env

runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ns(port: int, storage) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyroinst", "ns", "--host", "127.0.0.1", "--port", str(port)]
        + ["--storage", str(storage)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("name server at") and str(storage) in line, line
    return proc


def names(port: int) -> set[str]:
    with pyroinst.locate_ns("127.0.0.1", port, timeout=2) as ns:
        return set(ns.yplookup(meta_all={"pyroinst.device"}, return_metadata=False))


def test_names_are_back_at_once_after_kill_9(tmp_path):
    port, storage = free_port(), tmp_path / "names.db"
    procs = []
    try:
        procs.append(start_ns(port, storage))
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.serve_helper", "127.0.0.1", str(port)]
            + ["--heartbeat", "0"],  # no heartbeat: only the storage can bring names back
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append(server)
        assert server.stdout.readline().startswith("READY")
        assert names(port) == {"dev", "echo"}
        procs[0].kill()  # kill -9
        procs[0].wait(10)
        procs.append(start_ns(port, storage))
        assert names(port) == {"dev", "echo"}  # at once: no heartbeat ran meanwhile
        proxy = pyroinst.connect("echo", "127.0.0.1", port)
        assert proxy.echo(5) == 5
        proxy._pyroRelease()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            proc.stdout.close()


@pytest.mark.parametrize("case", ["missing-folder", "folder", "corrupt"])
def test_unusable_storage_is_refused_with_exit_2(tmp_path, case):
    if case == "missing-folder":
        path = tmp_path / "no" / "such" / "names.db"
    elif case == "folder":
        path = tmp_path
    else:
        path = tmp_path / "names.db"
        path.write_bytes(b"this is not an sqlite database, just some bytes " * 100)
    port = free_port()
    result = runner.invoke(
        app, ["ns", "--host", "127.0.0.1", "--port", str(port), "--storage", str(path)]
    )
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr and "storage" in result.stderr
    with socket.socket() as s:  # nothing was left listening
        s.bind(("127.0.0.1", port))


def test_nameserver_sh_passes_the_storage_through(tmp_path):
    storage = tmp_path / "names.db"
    env = clean_env(
        PYROINST_NS_HOST="127.0.0.1",
        PYROINST_NS_PORT=str(free_port()),
        PYROINST_NS_STORAGE=str(storage),
        PYTHON=sys.executable,
    )
    proc = subprocess.Popen(
        ["bash", str(ROOT / "nameserver.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"names kept in {storage}" in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        proc.stdout.close()
    assert proc.returncode == 0 and storage.exists()

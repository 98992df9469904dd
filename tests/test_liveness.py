"""Liveness in a lab with dead PCs: one check per server, all at once, one deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

import pyroinst
from pyroinst.cli import app
from tests.helpers import ROOT, clean_env

runner = CliRunner()


class Served:
    """tests.serve_helper in its own process (devices PREFIXdev and PREFIXecho)."""

    def __init__(self, ns, prefix: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.serve_helper", ns.host, str(ns.port)]
            + ["--prefix", prefix, "--heartbeat", "0"],
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout.readline().startswith("READY")

    def end(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def lab(ns):
    servers = {}
    try:
        for prefix in ("up_", "frozen_", "dead_"):
            servers[prefix] = Served(ns, prefix)
        yield servers
    finally:
        for server in servers.values():
            server.end()


def test_list_marks_stopped_and_killed_servers_within_the_deadline(ns, lab):
    os.kill(lab["frozen_"].proc.pid, signal.SIGSTOP)  # a frozen PC: connects, never answers
    lab["dead_"].proc.kill()  # a crashed server: its names stay until autoclean
    lab["dead_"].proc.wait(10)
    start = time.monotonic()
    result = runner.invoke(app, ["--ns-host", ns.host, "--ns-port", str(ns.port), "list", "--json"])
    elapsed = time.monotonic() - start
    assert result.exit_code == 0, result.output
    assert elapsed < 1.5 + 1.0, elapsed  # the deadline, not a timeout per device
    by_name = {d["name"]: d for d in json.loads(result.stdout)}
    for name in ("up_dev", "up_echo"):
        assert by_name[name]["alive"] is True and by_name[name]["reason"] == "ok"
    for name in ("frozen_dev", "frozen_echo"):
        assert by_name[name]["alive"] is False
        assert by_name[name]["reason"] == "no answer within 1.5 s"
    for name in ("dead_dev", "dead_echo"):
        assert by_name[name]["alive"] is False
        assert by_name[name]["reason"] == "connection refused"
    table = runner.invoke(
        app, ["--ns-host", ns.host, "--ns-port", str(ns.port), "list", "--timeout", "0.5"]
    )
    assert "NO (no answer within 0.5 s)" in table.stdout
    assert "NO (connection refused)" in table.stdout
    info = runner.invoke(
        app, ["--ns-host", ns.host, "--ns-port", str(ns.port), "info", "frozen_dev"]
    )
    assert info.exit_code == 3 and "does not answer: no answer within 1.5 s" in info.stderr


def test_list_devices_alive_option(ns, lab):
    lab["dead_"].proc.kill()
    lab["dead_"].proc.wait(10)
    devices = pyroinst.list_devices(ns.host, ns.port, alive=True, timeout=3)
    verdicts = {d["name"]: (d["alive"], d["reason"]) for d in devices}
    assert verdicts["up_dev"] == (True, "ok")
    assert verdicts["dead_echo"] == (False, "connection refused")
    assert len({d["server"] for d in devices}) == 3
    plain = pyroinst.list_devices(ns.host, ns.port)
    assert "alive" not in plain[0]


def test_wrong_token_reads_authentication_failed(ns, monkeypatch):
    from pyroinst import InstServer
    from pyroinst.admission import FailureTracker
    from pyroinst.authserver import ServerAuth
    from tests.helpers import Echo

    server = InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    server.add_device(Echo(), "locked")
    server.start()
    try:
        # The device server asks for a token the client lacks; the name server stays open.
        server._daemon._pyroinst_auth = ServerAuth("the-lab-token", False, FailureTracker())
        devices = pyroinst.list_devices(ns.host, ns.port, alive=True)
        assert {d["name"]: d["reason"] for d in devices}["locked"] == "authentication failed"
    finally:
        server.stop()

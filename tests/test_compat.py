"""The Pyro5 versions pyroinst is tested with, the fallback outside them, PYROINST_FASTWIRE=0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from pyroinst import compat
from tests.helpers import ROOT, clean_env, run_python


def test_pyproject_states_the_tested_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyro5 = [d for d in project["dependencies"] if re.match(r"(?i)pyro5\b", d)]
    assert pyro5 == [f"Pyro5>={compat.PYRO5_TESTED[0]},<={compat.PYRO5_TESTED[1]}"]


def test_installed_pyro5_is_within_the_range():
    assert compat.pyro5_tested(), compat.pyro5_version()
    if os.environ.get("CI"):
        # CI installs the newest version the bounds allow.
        assert compat.pyro5_version() == compat.PYRO5_TESTED[1]


@pytest.mark.parametrize(
    "version, tested",
    [
        ("5.15", True),
        ("5.16", True),
        ("5.17", True),
        ("5.17.1", True),
        ("5.14", False),
        ("5.18", False),
        ("6.0", False),
        ("4.82", False),
        ("garbage", False),
    ],
)
def test_tested_range(version, tested):
    assert compat.pyro5_tested(version) is tested


_OUTSIDE = """
import logging, sys
import numpy as np
import Pyro5, Pyro5.protocol, Pyro5.socketutil
Pyro5.__version__ = "5.99"
original = (Pyro5.protocol.SendingMessage, Pyro5.protocol.recv_stub, Pyro5.socketutil.send_data)
import pyroinst
from pyroinst import EmbeddedNameServer, InstServer
from tests.helpers import Echo
assert not pyroinst.fastwire.enabled()
assert (Pyro5.protocol.SendingMessage, Pyro5.protocol.recv_stub,
        Pyro5.socketutil.send_data) == original, "message path patched"
with EmbeddedNameServer("127.0.0.1", 0) as ns:
    with InstServer(ns_host=ns.host, ns_port=ns.port) as server:
        server.add_device(Echo(), "echo")
        echo = pyroinst.connect("echo", ns.host, ns.port)
        a = np.arange(300_000, dtype=np.float64)
        assert np.array_equal(echo.echo(a), a)
        assert echo.upload_info(a)["sum"] == float(a.sum())
        assert np.array_equal(echo.big(200_000).result(timeout=30), np.arange(200_000.0))
        echo._pyroRelease()
print("OUTSIDE-OK")
"""


def test_untested_pyro5_is_left_alone_with_one_warning():
    proc = run_python("-c", _OUTSIDE, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "OUTSIDE-OK" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if "outside the versions" in line]
    assert len(warnings) == 1, proc.stderr
    assert "Pyro5 5.99" in warnings[0] and "5.15 to 5.17" in warnings[0]


class _Server:
    """tests.serve_helper in its own process, with the given environment."""

    def __init__(self, ns, env: dict[str, str]) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.serve_helper", ns.host, str(ns.port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), Path(self.log.name).read_text()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()
        self.log.close()
        os.unlink(self.log.name)


@pytest.mark.parametrize(
    "server_fast, client_fast",
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["both-off", "client-off", "server-off", "both-on"],
)
def test_fastwire_off_on_either_side(ns, server_fast, client_fast):
    server = _Server(ns, clean_env(PYROINST_FASTWIRE="1" if server_fast else "0"))
    try:
        proc = run_python(
            "-m",
            "tests.fastwire_client",
            ns.host,
            str(ns.port),
            env=clean_env(PYROINST_FASTWIRE="1" if client_fast else "0"),
            timeout=120,
        )
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["fastwire"] is client_fast
    # Annotations only where both sides have the fast path (they say so in the handshake).
    assert report["reply_annotated"] is (server_fast and client_fast)
    assert report["upload_annotated"] is (server_fast and client_fast)
    assert report["echo_ok"] and report["upload_ok"] and report["nested_ok"] and report["job_ok"]

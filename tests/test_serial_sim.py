"""The multimeter driver over a real pseudo-terminal (real pyserial) against the simulator,
served by a real InstServer: normal use and every bad input, the server serving on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import Pyro5.api
import pytest

import pyroinst
from devices.multimeter import Multimeter
from tests.helpers import serve_process, wait_until

ROOT = Path(__file__).resolve().parent.parent


class Sim:
    """``python -m devices.sim.multimeter`` in the background; always stopped."""

    def __init__(self, *options: str, link: Path | None = None) -> None:
        args = [sys.executable, "-m", "devices.sim.multimeter", "--seed", "1", *options]
        if link is not None:
            args += ["--link", str(link)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        self.path = self.proc.stdout.readline().strip()
        assert self.path.startswith("/dev/"), self.proc.stderr.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def sim(tmp_path):
    sims = []

    def start(*options, link=None):
        s = Sim(*options, link=link)
        sims.append(s)
        return s

    yield start
    for s in sims:
        s.stop()


@pytest.fixture
def dmm_server(ns, make_server):
    """Serve a Multimeter on ``port`` as 'dmm'; returns a client proxy."""
    proxies = []

    def serve(port, **link_options):
        link_options.setdefault("timeout", 0.5)
        make_server({"dmm": Multimeter(port, **link_options)})
        proxy = Pyro5.api.Proxy(f"PYRONAME:dmm@{ns.host}:{ns.port}")
        proxies.append(proxy)
        return proxy

    yield serve
    for p in proxies:
        assert p.ping() is True  # the server still serves after every bad input
        p._pyroRelease()


def test_simulator_prints_only_the_path_first(sim):
    s = sim()
    assert s.path.startswith("/dev/pts/") and " " not in s.path
    assert s.stop() == 0


def test_end_to_end_through_the_server(sim, dmm_server):
    s = sim("--value", "2.5", "--noise", "0.001")
    dmm = dmm_server(s.path)
    assert "SimulatedMultimeter" in dmm.idn()
    dmm.configure("VOLT:DC", 10)
    assert dmm.read() == pytest.approx(2.5, abs=0.01)
    job = dmm.acquire(100)
    assert isinstance(job, pyroinst.JobHandle)
    seen = []
    while not job.wait(0.01):
        seen.append(job.progress())
    data = job.result()
    assert data.dtype == np.float64 and data.shape == (100,)
    assert abs(data.mean() - 2.5) < 0.01
    assert job.progress() == 1.0 and all(0.0 <= p <= 1.0 for p in seen)
    assert job.status()["message"] == "100 of 100 readings"


def test_unknown_command_comes_back_from_the_error_queue(sim, dmm_server):
    dmm = dmm_server(sim().path)
    dmm.write("FROB:NICATE 3")
    with pytest.raises(pyroinst.InstrumentError) as info:
        dmm.check_errors()
    assert info.value.code == -113 and "Undefined header" in str(info.value)
    dmm.check_errors()  # the queue is empty again
    assert "SimulatedMultimeter" in dmm.idn()


def test_no_reply_is_a_timeout(sim, dmm_server):
    dmm = dmm_server(sim("--drop-every", "1").path, timeout=0.3)
    with pytest.raises(pyroinst.DeviceTimeout) as info:
        dmm.idn()
    assert "no reply to '*IDN?'" in str(info.value)
    assert info.value.command == "*IDN?"


def test_partial_line_is_a_timeout_with_the_partial_reply(sim, dmm_server):
    dmm = dmm_server(sim("--truncate-every", "1").path, timeout=0.3)
    with pytest.raises(pyroinst.DeviceTimeout) as info:
        dmm.idn()
    assert "partial reply" in str(info.value) and info.value.partial.startswith(b"pyroinst")


def test_garbage_is_a_response_error(sim, dmm_server):
    dmm = dmm_server(sim("--garbage-every", "2").path)
    assert "SimulatedMultimeter" in dmm.idn()  # reply 1 fine
    with pytest.raises(pyroinst.ResponseError) as info:
        dmm.read()  # reply 2 garbage
    assert isinstance(info.value.raw, bytes) and "not ascii text" in str(info.value)
    dmm.read()  # reply 3 fine again


def test_wrong_baudrate_is_clearly_worded(sim, dmm_server):
    dmm = dmm_server(sim("--baudrate", "19200").path, baudrate=9600)
    with pytest.raises((pyroinst.ResponseError, pyroinst.DeviceTimeout)) as info:
        dmm.idn()
    assert "baudrate" in str(info.value) and "9600" in str(info.value)


def test_port_lost_during_acquire_then_back(sim, dmm_server, tmp_path):
    link = tmp_path / "dmm"
    first = sim("--close-after", "20", link=link)
    dmm = dmm_server(str(link))
    job = dmm.acquire(100, 0.005)
    assert job.wait(20)
    status = job.status()
    assert status["state"] == "failed" and "DeviceConnectionError" in status["error"]
    with pytest.raises(pyroinst.DeviceConnectionError) as info:
        job.result()
    assert str(link) in str(info.value)
    assert first.proc.wait(10) == 0
    assert dmm.ping()  # the server is up
    with pytest.raises(pyroinst.DeviceConnectionError):
        dmm.idn()  # the port is still gone: reopening fails, clearly
    sim(link=link)  # the port is back (a new pty behind the same name)
    wait_until(lambda: link.exists())
    assert "SimulatedMultimeter" in dmm.idn()
    assert dmm.acquire(5).result(10).shape == (5,)


def test_missing_port_at_construction():
    with pytest.raises(pyroinst.DeviceConnectionError, match="/dev/no-such-dmm"):
        Multimeter("/dev/no-such-dmm", timeout=0.1)


def test_overload_reads_infinite(sim, dmm_server):
    dmm = dmm_server(sim().path)
    dmm.configure("VOLT:DC", 1)
    dmm.write("SIM:VAL 5")
    assert dmm.read() == float("inf")


def test_lab_serial_toml_served_by_the_cli(sim, ns, tmp_path):
    """`pyroinst serve examples/lab-serial.toml` against the simulator, used from a client."""
    import tomllib

    text = (ROOT / "examples" / "lab-serial.toml").read_text()
    example_port = tomllib.loads(text)["devices"]["dmm"]["args"][0]
    link = tmp_path / "dmm"  # the example's file, with a port name of this test's own
    lab = tmp_path / "lab-serial.toml"
    lab.write_text(text.replace(example_port, str(link)))
    sim("--value", "3.3", link=link)
    server = serve_process(ns, str(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def registered():
            with pyroinst.locate_ns(ns.host, ns.port) as nsp:
                return "dmm" in nsp.list()

        wait_until(registered, timeout=30)
        dmm = Pyro5.api.Proxy(f"PYRONAME:dmm@{ns.host}:{ns.port}")
        assert "SimulatedMultimeter" in dmm.idn()
        dmm.configure("VOLT:DC", 10)
        assert dmm.read() == pytest.approx(3.3, abs=0.01)
        data = dmm.acquire(100).result(30)
        assert data.shape == (100,)
        dmm._pyroRelease()
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert server.returncode == 0


def test_slow_replies_within_the_timeout(sim, dmm_server):
    dmm = dmm_server(sim("--delay", "0.1").path, timeout=2.0)
    assert "SimulatedMultimeter" in dmm.idn()
    assert dmm.acquire(3).result(10).shape == (3,)

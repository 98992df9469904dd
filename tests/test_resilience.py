"""Restarts and failures on loopback: heartbeat, stale entries, reconnecting proxies and
handles, lost connections, full thread pools, clients that leave mid-job."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import Pyro5.errors
import pytest

import pyroinst
from pyroinst import EmbeddedNameServer, InstServer
from tests.helpers import Echo, clean_env, wait_until
from tests.netns import Namespace, namespaces_unavailable

ROOT = Path(__file__).resolve().parent.parent


def names(host, port):
    with pyroinst.locate_ns(host, port) as nsp:
        return set(nsp.yplookup(meta_all={"pyroinst.device"}, return_metadata=False))


class ServerProcess:
    def __init__(self, ns, *options: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.serve_helper", ns.host, str(ns.port), *options],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), self.proc.stderr.read()
        self.echo_uri = line.split()[1]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_process(ns):
    started = []

    def start(*options):
        s = ServerProcess(ns, *options)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_heartbeat_registers_again_after_name_server_restart(ns, make_server):
    make_server({"dev": Echo()}, heartbeat=0.2)
    host, port = ns.host, ns.port
    ns.stop()
    fresh = EmbeddedNameServer(host, port).start()  # a new, empty name server
    try:
        wait_until(lambda: names(host, port) == {"dev"}, timeout=10)
        assert pyroinst.connect("dev", host, port).echo(1) == 1
    finally:
        fresh.stop()
        ns.start()  # the fixture stops it again


def test_heartbeat_does_not_take_a_name_from_a_live_server(ns, caplog):
    first = InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    first.add_device(Echo(), "dev")
    second = InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    with first, second:
        with pyroinst.locate_ns(ns.host, ns.port) as nsp:
            nsp.remove("dev")  # as after a name server restart...
        second.add_device(Echo(), "dev")  # ...and another server took the name meanwhile
        with caplog.at_level(logging.WARNING, logger="pyroinst.server"):
            first.check_registrations()
        with pyroinst.locate_ns(ns.host, ns.port) as nsp:
            assert str(nsp.lookup("dev")) == second.uri("dev")
        assert "held by another live server" in caplog.text


def test_dead_servers_entries_disappear(ns, server_process):
    ns.stop()
    ns.start()  # autoclean is on for pyroinst's name servers
    server = server_process()
    assert names(ns.host, ns.port) == {"dev", "echo"}
    server.kill()  # no chance to unregister
    wait_until(lambda: names(ns.host, ns.port) == set(), timeout=40, interval=0.5)


def test_proxy_and_handle_survive_a_server_restart(ns, server_process):
    first = server_process()
    dev = pyroinst.connect("echo", ns.host, ns.port, reconnect_timeout=20)
    assert dev.echo(1) == 1
    job = dev.big(10)
    assert job.result(10).shape == (10,)
    first.stop()
    second = server_process()  # another process, another port
    assert second.echo_uri != first.echo_uri
    assert dev.echo(2) == 2  # the same proxy found the device again
    with pytest.raises(pyroinst.JobNotFound, match="server restarted"):
        job.status()  # the old job's handle says what happened, without hanging
    again = dev.big(5)
    assert np.array_equal(again.result(10), np.arange(5.0))


def test_unreachable_device_gives_up_clearly(ns, server_process):
    server = server_process()
    dev = pyroinst.connect("echo", ns.host, ns.port, reconnect_timeout=1.0)
    assert dev.echo(1) == 1
    server.kill()
    with pytest.raises(pyroinst.DeviceUnreachable) as info:
        dev.echo(2)
    assert "'echo'" in str(info.value) and "did not answer" in str(info.value)


def test_call_interrupted_by_a_crash_is_not_resent(ns, server_process):
    server = server_process()
    dev = pyroinst.connect("echo", ns.host, ns.port, reconnect_timeout=1.0)
    assert dev.echo(1) == 1
    import threading

    killer = threading.Timer(0.5, server.kill)
    killer.start()
    with pytest.raises(pyroinst.ConnectionLost, match="not re-sent"):
        dev.sleep(30)
    killer.join()


def test_client_leaving_mid_job_loses_nothing(ns, make_server):
    make_server({"dev": Echo()})
    code = (
        "import pyroinst, sys\n"
        f"dev = pyroinst.connect('dev', '{ns.host}', {ns.port})\n"
        "print(dev.hold(0.5).id)\n"  # start the job and leave at once
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    job_id = proc.stdout.strip()
    assert proc.returncode == 0 and job_id, proc.stderr
    other = pyroinst.connect("dev", ns.host, ns.port)
    assert other.job_result(job_id, 10) == "held"


def test_exhausted_thread_pool_names_the_setting(ns, server_process):
    server_process("--threadpool", "2")
    first = pyroinst.connect("echo", ns.host, ns.port)
    second = pyroinst.connect("echo", ns.host, ns.port)
    assert first.echo(1) == 1 and second.echo(2) == 2  # both hold their connection
    third = pyroinst.connect("echo", ns.host, ns.port, reconnect_timeout=0.5)
    with pytest.raises(pyroinst.ServerBusy, match="threadpool_size"):
        third.echo(3)
    first._pyroRelease()
    wait_until(lambda: _answers(third), timeout=10)


def _answers(proxy) -> bool:
    try:
        return proxy.echo(4) == 4
    except (pyroinst.ServerBusy, Pyro5.errors.CommunicationError):
        return False


_ELSEWHERE = """
import pyroinst
from pyroinst import EmbeddedNameServer, InstServer
from tests.helpers import Echo
with EmbeddedNameServer("10.213.78.1", 0) as lab_ns:
    server = InstServer(host="127.0.0.1", ns_host=lab_ns.host, ns_port=lab_ns.port)
    server.add_device(Echo(), "dev")
    try:
        server.start()
    except pyroinst.ConfigurationError as exc:
        assert "advertise" in str(exc), exc
        print("REFUSED")
    finally:
        server.stop()
"""


def test_loopback_uri_refused_by_a_name_server_elsewhere():
    """A name server on a non-loopback address, inside a namespace made for the test."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    with Namespace("10.213.78.1/24") as netns:
        proc = subprocess.run(
            netns.command(sys.executable, "-c", _ELSEWHERE),
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert "REFUSED" in proc.stdout

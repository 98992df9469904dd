"""The defects a second review found (live data, core, command line): one test each."""

from __future__ import annotations

import json
import logging
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import Pyro5.api
import pytest

import pyroinst
from pyroinst.buffers import StreamBuffer
from tests.helpers import ROOT, Beating, Echo, Publisher, clean_env, wait_until


def monitor_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"pyroinst-monitor-{name}"]


# -- live data ------------------------------------------------------------------------------
def test_1_monitors_stop_with_their_device(ns, make_server):
    driver = Beating()
    server = make_server({"beat": driver})
    wait_until(lambda: driver.beats > 2)
    assert len(monitor_threads("beat")) == 1
    server.remove_device("beat", close=False)
    assert monitor_threads("beat") == []  # stopped, not left polling the driver
    assert not driver.closed
    server.add_device(driver, "beat")
    wait_until(lambda: len(monitor_threads("beat")) == 1)
    seen = driver.beats
    wait_until(lambda: driver.beats > seen)
    assert len(monitor_threads("beat")) == 1  # re-added: one monitor, not two
    server.stop()
    assert monitor_threads("beat") == []
    assert driver.closed


def test_2_closing_a_stream_from_another_thread_ends_it(ns, make_server):
    make_server({"dev": Echo()})
    dev = pyroinst.connect("dev", ns.host, ns.port)
    job = dev.hold(30)
    stream = job.stream()
    outcome: list = []

    def read() -> None:
        try:
            for _ in stream:
                pass
            outcome.append("ended")
        except Exception as exc:  # noqa: BLE001 - the finding
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    wait_until(lambda: stream._reader is not None)
    stream.close()
    reader.join(10)
    assert outcome == ["ended"]
    job.cancel()
    dev._pyroRelease()


def test_3_a_channel_made_by_publish_is_waited_for_after_a_restart(ns):
    first = pyroinst.InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    first.add_device(Publisher(), "pub")
    first.start()
    dev = pyroinst.connect("pub", ns.host, ns.port)
    dev.announce("data", 1)
    stream = dev.watch("data", start=0)
    got: list = []
    errors: list = []

    def read() -> None:
        try:
            for _, value in stream:
                got.append(value)
        except Exception as exc:  # noqa: BLE001 - the finding
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    second = None
    try:
        wait_until(lambda: got == [1])
        first.stop()
        second = pyroinst.InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
        second.add_device(Publisher(), "pub")
        second.start()
        # The new server has no channel "data" until its first publish: the stream waits
        # for it, then reads what the new run published on it.
        again = pyroinst.connect("pub", ns.host, ns.port)
        again.announce("data", 2)
        wait_until(lambda: 2 in got or errors, timeout=15)
        assert errors == []
        assert got == [1, 2]
        assert stream.gaps == 1
        again._pyroRelease()
    finally:
        stream.close()
        reader.join(10)
        dev._pyroRelease()
        if second is not None:
            second.stop()
        first.stop()


def test_4_a_cursor_beyond_the_end_means_from_that_item_on(ns, make_server):
    driver = Publisher()
    make_server({"pub": driver})
    dev = pyroinst.connect("pub", ns.host, ns.port)
    job = dev.emit(3, 5)
    wait_until(lambda: job.status()["state"] == "running")
    first: list = []

    def read() -> None:
        with job.stream(start=5) as stream:
            for value in stream:
                first.append((stream.number, value))
                return

    reader = threading.Thread(target=read)
    reader.start()
    dev.open_gate()
    reader.join(15)
    assert first == [(5, 5)]
    assert job.result(timeout=10) == 8
    dev._pyroRelease()


def cli(ns, *args: str, **popen: object) -> subprocess.Popen:
    env = clean_env(PYROINST_NS_HOST=ns.host, PYROINST_NS_PORT=str(ns.port))
    return subprocess.Popen(
        [sys.executable, "-m", "pyroinst", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def waiting_readers(server: pyroinst.InstServer, device: str, channel: str | None) -> int:
    """Readers in a long poll on a channel (or on the newest job's stream) of ``device``."""
    servant = server._servants[device]
    if channel is not None:
        return servant._channels.get(channel).buffer._waiting
    jobs = servant._store.jobs_of(device)
    return max((job.stream._waiting for job in jobs), default=0)


def test_5_follow_and_watch_notice_timeout_and_ctrl_c(ns, make_server):
    server = make_server({"dev": Echo(), "pub": Publisher()})
    pub = pyroinst.connect("pub", ns.host, ns.port)
    pub.announce("quiet", 0)
    dev = pyroinst.connect("dev", ns.host, ns.port)
    proc = None
    try:
        # --timeout while no item comes
        began = time.monotonic()
        proc = cli(ns, "call", "dev", "hold", "60", "--follow", "--timeout", "2")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1, err
        assert "still running after 2 s" in err
        assert time.monotonic() - began < 10
        for job in dev.job_list():
            if job["state"] in ("queued", "running"):
                dev.job_cancel(job["id"])
        began = time.monotonic()
        proc = cli(ns, "watch", "pub", "quiet", "--timeout", "2")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert time.monotonic() - began < 10
        # Ctrl-C while no item comes: the job is cancelled, exit 130
        proc = cli(ns, "call", "dev", "hold", "60", "--follow")
        wait_until(lambda: waiting_readers(server, "dev", None) > 0, timeout=20)
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert time.monotonic() - began < 5
        assert "cancelled" in err
        wait_until(lambda: dev.job_list()[0]["state"] == "cancelled")
        proc = cli(ns, "watch", "pub", "quiet")
        wait_until(lambda: waiting_readers(server, "pub", "quiet") > 0, timeout=20)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        pub._pyroRelease()
        dev._pyroRelease()


def test_6_views_count_the_memory_they_keep():
    buffer = StreamBuffer(max_items=1000, max_bytes=16 << 20)
    for _ in range(20):
        frame = np.ones((2048, 2048, 4), dtype=np.uint8)  # 16 MiB
        buffer.publish(frame[::4, ::4])  # 1 MiB on the wire, 16 MiB kept alive
    assert buffer.nbytes <= 16 << 20  # the bound holds for what is kept alive
    assert len(buffer._items) == 1
    pool = np.zeros((16, 1 << 20), dtype=np.uint8)
    shared = StreamBuffer(max_items=1000, max_bytes=64 << 20)
    for i in range(100):
        shared.publish(pool[i % 16])  # frames of one pool: the pool counts once
    assert shared.nbytes == pool.nbytes
    assert len(shared._items) == 100


def test_7_a_pool_of_frames_is_not_a_huge_result(ns, make_server, caplog):
    make_server({"pub": Publisher()}, max_result_bytes=64 << 20)
    dev = pyroinst.connect("pub", ns.host, ns.port)
    with caplog.at_level(logging.WARNING, logger="pyroinst.retention"):
        job = dev.pool_frames(200, 16, 1 << 20)  # 200 MiB published, a 16 MiB pool
        assert job.result(timeout=30) == 200
        assert dev.pool_frames(1, 1, 16).result(timeout=10) == 1  # retention runs again
    assert not [r for r in caplog.records if "max_result_bytes" in r.getMessage()]
    dev._pyroRelease()


# -- core -----------------------------------------------------------------------------------
def test_8_an_expiry_check_never_wipes_a_new_reservation(ns, make_server, monkeypatch):
    from pyroinst import reservations

    servant = make_server({"dev": Echo()})._servants["dev"]
    servant.reserve("alice", 0.05)
    wait_until(lambda: time.time() >= servant._reservation[1])
    original = reservations.log.info

    def meanwhile(message: str, *args: object) -> None:
        if "expired" in message:
            # Another client reserves right while the expiry is being noted.
            other = threading.Thread(target=lambda: servant.reserve("bob", 60))
            other.start()
            other.join(2)
        original(message, *args)

    monkeypatch.setattr(reservations.log, "info", meanwhile)
    servant._current_reservation()
    monkeypatch.setattr(reservations.log, "info", original)
    wait_until(lambda: servant._reservation is not None)
    assert servant._reservation[0] == "bob"


def test_9_many_open_files_do_not_make_every_call_reconnect(ns, make_server):
    make_server({"dev": Echo()})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-file limit ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [socket.socket() for _ in range(1050)]  # the next sockets get numbers >= 1024
    try:
        dev = pyroinst.connect("dev", ns.host, ns.port)
        dev.echo(0)
        conn = dev._pyroConnection
        assert conn.sock.fileno() >= 1024
        for i in range(50):
            assert dev.echo(i) == i
        assert dev._pyroConnection is conn  # one connection, not fifty
        dev._pyroRelease()
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("serializer", ["msgpack", "serpent", "json"])
def test_10_exception_arguments_with_numpy_values(ns, make_server, serializer):
    make_server({"pub": Publisher()})
    dev = Pyro5.api.Proxy(f"PYRONAME:pub@{ns.host}:{ns.port}")
    dev._pyroSerializer = serializer
    with pytest.raises(ValueError) as caught:
        dev.out_of_range()
    assert caught.value.args == ("out of range", 12.5)
    dev._pyroRelease()


def test_11_a_snapshot_with_class_keys_arrives_as_data(ns, make_server):
    make_server({"pub": Publisher()})
    dev = pyroinst.connect("pub", ns.host, ns.port)
    snap = dev.snapshot()
    assert snap["__class__"].startswith("qcodes.") and snap["parameters"]["ch1"]["value"] == 0.5
    dev._pyroRelease()
    proc = cli(ns, "call", "pub", "snapshot", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "qcodes.parameters.Parameter" in out and "unreachable" not in err


def test_11_an_undecodable_reply_is_not_unreachable(ns, make_server, monkeypatch):
    import Pyro5.errors

    from pyroinst import serialization

    make_server({"pub": Publisher()})
    dev = pyroinst.connect("pub", ns.host, ns.port)
    dev.snapshot()

    def undecodable(self, data):
        raise Pyro5.errors.SerializeError("unsupported serialized class: vendor.Thing")

    monkeypatch.setattr(serialization.MsgpackSerializer, "loads", undecodable)
    with pytest.raises(pyroinst.NotSerializableError, match="snapshot") as caught:
        dev.snapshot()
    assert "vendor.Thing" in str(caught.value)
    monkeypatch.undo()
    dev._pyroRelease()


def test_12_writing_a_read_only_property_says_so(ns, make_server):
    make_server({"pub": Publisher()})
    dev = pyroinst.connect("pub", ns.host, ns.port)
    assert dev.voltage == 1.5
    with pytest.raises(AttributeError, match="'voltage' of device 'pub' is read-only"):
        dev.voltage = 2.0
    dev._pyroRelease()


# -- command line ---------------------------------------------------------------------------
@pytest.fixture
def cli_lab(ns, make_server):
    from typer.testing import CliRunner

    from devices.dummy import DummyDevice
    from pyroinst.cli import app

    server = make_server({"dev": DummyDevice(idn_delay=0.01), "echo": Echo()})
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--ns-host", ns.host, "--ns-port", str(ns.port), *args])

    invoke.server = server  # type: ignore[attr-defined]
    return invoke


def test_13_arguments_are_converted_by_the_annotations(cli_lab):
    for word in ("abc", "2.5"):
        result = cli_lab("call", "dev", "measure", word)
        assert result.exit_code == 2, result.output
        assert f"time={word!r} is not a whole number" in result.stderr
        assert "Traceback" not in result.stderr
    assert cli_lab.server._servants["dev"]._store.jobs_of("dev") == []  # nothing ran
    result = cli_lab("call", "dev", "measure", "1e2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"]["shape"] == [100]  # 1e2 is the whole number 100


def test_14_job_waits_like_call_and_names_a_finished_job(cli_lab):
    started = cli_lab("call", "echo", "hold", "30", "--no-wait")
    job_id = started.stdout.strip()
    result = cli_lab("job", "echo", job_id, "--wait", "--timeout", "1")
    assert result.exit_code == 1 and "still running after 1 s" in result.stderr
    assert cli_lab("job", "echo", job_id, "--cancel").exit_code == 0
    result = cli_lab("job", "echo", job_id, "--wait")
    assert "had already cancelled" in result.stderr
    assert "started" not in result.stderr


def test_15_get_and_set_properties(cli_lab):
    result = cli_lab("get", "echo", "temperature")
    assert result.exit_code == 0 and result.stdout.strip() == "21.5"
    result = cli_lab("set", "echo", "temperature", "30", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"] == 30.0
    assert cli_lab("get", "echo", "temperature").stdout.strip() == "30.0"
    result = cli_lab("get", "echo", "nope")
    assert result.exit_code == 3 and "temperature" in result.stderr
    result = cli_lab("set", "echo", "temperature", "hot")
    assert result.exit_code == 2 and "not a number" in result.stderr


def test_16_out_dir_needs_its_parent(cli_lab, tmp_path):
    missing = tmp_path / "nonexist" / "d"
    result = cli_lab("call", "dev", "measure", "100", "--follow", "--out-dir", str(missing))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not missing.parent.exists()


def test_17_auth_errors_name_the_server_and_the_problem(monkeypatch):
    from typer.testing import CliRunner

    from pyroinst import EmbeddedNameServer
    from pyroinst.cli import app

    token = "review-lab-token-4e9a1c"
    with EmbeddedNameServer("127.0.0.1", 0, token=token) as ns:
        base = ["--ns-host", ns.host, "--ns-port", str(ns.port)]
        before = pyroinst.current_token()
        try:
            pyroinst.set_token(None)
            result = CliRunner().invoke(app, [*base, "list"])
            assert result.exit_code == 4, result.output
            assert f"the name server at {ns.host}:{ns.port}" in result.stderr
            assert "this client has none" in result.stderr
            assert "unreachable" not in result.stderr
            with pytest.raises(pyroinst.AuthenticationFailed, match="this client has none"):
                Pyro5.api.Proxy(f"PYRONAME:dev@{ns.host}:{ns.port}")._pyroBind()
            pyroinst.set_token("not-the-lab-token-9f8e7d")
            result = CliRunner().invoke(app, [*base, "list"])
            assert result.exit_code == 4, result.output
            assert "refused this client's token" in result.stderr
            assert "needs the lab's token" not in result.stderr
        finally:
            pyroinst.set_token(before)


def test_18_the_demo_names_the_interpreter_that_runs_it(ns, make_server, capsys):
    from pyroinst.cli.servers import _print_serving

    server = make_server({"dev": Echo()})
    _print_serving(server)
    out = capsys.readouterr().out
    assert f"{sys.executable} -c" in out
    assert f"pyroinst --ns-host {ns.host} --ns-port {ns.port} info dev" in out


def test_19_a_name_server_unit_on_every_interface_without_a_token_warns():
    from typer.testing import CliRunner

    from pyroinst.cli import app

    result = CliRunner().invoke(app, ["service", "--ns"])
    assert result.exit_code == 0
    assert "without a token" in result.stderr and "--token-file" in result.stderr
    result = CliRunner().invoke(app, ["service", "--ns", "--host", "127.0.0.1"])
    assert result.exit_code == 0 and "without a token" not in result.stderr

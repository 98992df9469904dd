"""The audit log: one whole JSON line per remote action, rotation, ``pyroinst audit``."""

from __future__ import annotations

import datetime as dt
import json
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

import pyroinst
from pyroinst import InstServer
from pyroinst.audit import AuditLog, parse_since, summarise
from pyroinst.cli import app
from tests.helpers import Echo, wait_until

THREADS = 8
CALLS = 25


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def lines_ok(path) -> list[dict]:
    """The records of a log that may hold a line that is not one."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@pytest.fixture
def audited(ns, tmp_path):
    path = tmp_path / "audit.jsonl"
    server = InstServer(ns_host=ns.host, ns_port=ns.port, audit_log=str(path), heartbeat=0)
    server.add_device(Echo(), "dev")
    with server:
        yield server, path


def test_every_action_once_under_eight_threads(audited, ns):
    server, path = audited
    errors = []

    def work(worker: int) -> None:
        try:
            dev = pyroinst.connect("dev", ns.host, ns.port)
            for i in range(CALLS):
                assert dev.echo(f"w{worker}-{i}") == f"w{worker}-{i}"
                dev.describe()  # reads: not logged
                dev.ping()
                dev.cached()  # @concurrent: a read
                _ = dev.temperature
            job = dev.big(3)
            job.result(10)
            job.status()
            dev.temperature = 20.0 + worker
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    records = lines(path)  # every line is valid JSON (json.loads would raise)
    echoes = [r["args"][0] for r in records if r["method"] == "echo"]
    assert sorted(echoes) == sorted(f"w{w}-{i}" for w in range(THREADS) for i in range(CALLS))
    assert len(set(echoes)) == THREADS * CALLS  # each exactly once
    jobs = [r for r in records if r["method"] == "big"]
    assert len(jobs) == THREADS and all(r["job"] and len(r["job"]) == 16 for r in jobs)
    writes = [r for r in records if r["method"] == "temperature (write)"]
    assert sorted(r["args"][0] for r in writes) == [20.0 + w for w in range(THREADS)]
    logged = {r["method"] for r in records}
    assert logged == {"echo", "big", "temperature (write)"}, logged  # no reads
    for r in records:
        assert r["device"] == "dev" and r["outcome"] == "ok" and r["peer"].startswith("127.0.0.1:")
        assert r["time"].endswith("Z") and r["duration_s"] >= 0
        assert dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).tzinfo is not None


def test_owner_outcomes_cancel_and_reservations(audited, ns):
    server, path = audited
    alice = pyroinst.connect("dev", ns.host, ns.port)
    alice.reserve("alice", 60)
    job = alice.hold(30)
    other = pyroinst.DeviceProxy(server.uri("dev"))
    with pytest.raises(pyroinst.DeviceReserved):
        other.echo("refused")
    assert job.cancel()
    job.wait(10)
    with pytest.raises(Exception, match="boom"):
        alice.fail("boom")
    alice.upload_info(np.zeros((100, 3)))
    alice.release()
    other._pyroRelease()
    records = lines(path)
    by_method = {r["method"]: r for r in records}
    assert by_method["reserve"]["owner"] == "alice" and by_method["reserve"]["args"][0] == "alice"
    assert by_method["hold"]["owner"] == "alice" and by_method["hold"]["job"] == job.id
    assert by_method["echo"]["outcome"] == "refused: reserved by alice"
    assert by_method["echo"]["owner"] is None
    assert by_method["fail"]["outcome"] == "error: DriverError"
    assert by_method["job_cancel"]["job"] == job.id and by_method["job_cancel"]["owner"] == "alice"
    assert by_method["upload_info"]["args"] == ["ndarray float64[100,3]"]
    assert by_method["release"]["outcome"] == "ok"


def test_reads_logged_when_asked(ns, tmp_path):
    path = tmp_path / "reads.jsonl"
    server = InstServer(
        ns_host=ns.host, ns_port=ns.port, audit_log=str(path), audit_reads=True, heartbeat=0
    )
    server.add_device(Echo(), "dev")
    with server:
        dev = pyroinst.connect("dev", ns.host, ns.port)
        dev.describe()
        job = dev.big(2)
        job.result(10)
        _ = dev.temperature
        dev.cached()
    methods = [r["method"] for r in lines(path)]
    for expected in ("describe", "big", "job_result", "temperature (read)", "cached"):
        assert expected in methods, methods


def test_a_rotated_log_is_opened_again(audited, ns):
    server, path = audited
    dev = pyroinst.connect("dev", ns.host, ns.port)
    dev.echo("before")
    rotated = path.with_suffix(".1")
    path.rename(rotated)  # what logrotate does
    dev.echo("after")
    assert [r["args"][0] for r in lines(rotated)] == ["before"]
    assert [r["args"][0] for r in lines(path)] == ["after"]
    path.unlink()  # deleted outright
    dev.echo("again")
    assert [r["args"][0] for r in lines(path)] == ["again"]


def test_unwritable_audit_log(ns, tmp_path):
    with pytest.raises(pyroinst.ConfigurationError, match="audit log"):
        InstServer(ns_host=ns.host, ns_port=ns.port, audit_log=str(tmp_path / "no" / "dir.jsonl"))
    lab = tmp_path / "lab.toml"
    marker = tmp_path / "created"
    lab.write_text(
        f'[server]\nhost = "127.0.0.1"\naudit_log = "{tmp_path}/missing/audit.jsonl"\n'
        '[devices.dev]\nclass = "tests.helpers:Marker"\n'
        f'kwargs = {{ path = "{marker}" }}\n'
    )
    result = CliRunner().invoke(
        app, ["--ns-host", ns.host, "--ns-port", str(ns.port), "serve", str(lab)]
    )
    assert result.exit_code == 2, result.output
    assert "audit log" in result.stderr and "cannot be written" in result.stderr
    assert not marker.exists()  # no instrument was opened
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        assert "dev" not in nsp.list()  # nothing served


def test_pyroinst_audit_command(audited, ns):
    server, path = audited
    dev = pyroinst.connect("dev", ns.host, ns.port)
    dev.reserve("bob", 30)
    dev.echo("x" * 300)
    dev.release()
    other = pyroinst.connect("dev", ns.host, ns.port, owner="carol")
    other.echo(1)
    with path.open("a") as f:
        f.write("not json\n")
    runner = CliRunner()
    result = runner.invoke(app, ["audit", str(path)])
    assert result.exit_code == 0, result.output
    assert "skipped 1 line" in result.stderr
    table = result.stdout.splitlines()
    assert table[0].split()[:3] == ["time", "(UTC)", "device"]
    assert len(table) == 1 + 4
    long = [r for r in lines_ok(path) if r["method"] == "echo"][0]["args"][0]
    assert long.endswith("... (300 characters)") and len(long) < 120  # cut in the log
    result = runner.invoke(app, ["audit", str(path), "--owner", "bob"])
    assert [line.split()[3] for line in result.stdout.splitlines()[1:]] == [
        "reserve",
        "echo",
        "release",
    ]
    result = runner.invoke(app, ["audit", str(path), "--device", "nothing"])
    assert result.stdout.strip() == "no matching actions"
    assert runner.invoke(app, ["audit", str(path), "--since", "1h"]).stdout.count("\n") == 5
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    result = runner.invoke(app, ["audit", str(path), "--since", future, "--json"])
    assert json.loads(result.stdout) == []
    result = runner.invoke(app, ["audit", str(path), "--since", "yesterday"])
    assert result.exit_code == 2 and "30m, 2h, 1d" in result.stderr
    result = runner.invoke(app, ["audit", str(path.with_name("none.jsonl"))])
    assert result.exit_code == 3 and "no audit log" in result.stderr


def test_summaries_and_since():
    assert summarise(np.zeros((2, 3), dtype=np.int16)) == "ndarray int16[2,3]"
    assert summarise(list(range(100)))[-1] == "... (100 items)"
    assert summarise(float("nan")) == "nan"
    assert summarise(b"abc") == "bytes[3]"
    assert summarise({"a": [[[[1]]]]}) == {"a": [["list(...)"]]}  # three levels deep
    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
    assert parse_since("2h", now) == now - dt.timedelta(hours=2)
    assert parse_since("2026-12-02T09:00", now).tzinfo is not None
    with pytest.raises(ValueError):
        parse_since("-5m", now)


def test_lines_never_interleave(tmp_path):
    log = AuditLog(tmp_path / "many.jsonl")
    payload = "y" * 70

    def write(n: int) -> None:
        for i in range(500):
            log.run("dev", "m", lambda: None, (payload, n, i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_until(lambda: len((tmp_path / "many.jsonl").read_text().splitlines()) == 4000)
    records = lines(tmp_path / "many.jsonl")
    assert len({(r["args"][1], r["args"][2]) for r in records}) == THREADS * 500
    log.close()

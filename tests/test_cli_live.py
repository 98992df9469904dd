"""`call --follow` and `watch` through CliRunner, and once as a real process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from devices.dummy import DummyDevice
from pyroinst.cli import app
from tests.helpers import run_python

runner = CliRunner()


@pytest.fixture
def cli(ns, make_server):
    make_server({"dev": DummyDevice(idn_delay=0.01, seed=1)})

    def invoke(*args):
        return runner.invoke(app, ["--ns-host", ns.host, "--ns-port", str(ns.port), *args])

    invoke.ns = ns
    return invoke


def test_follow_prints_each_item_then_the_result(cli):
    result = cli("call", "dev", "measure", "300", "--follow")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    items = [ln for ln in lines if ln.startswith("item ")]
    assert len(items) >= 3 and items[0].startswith("item 0: array dtype float64")
    assert lines[-1].startswith("array dtype float64, shape (300,)")


def test_follow_out_dir_writes_every_array_item(cli, tmp_path):
    out = tmp_path / "items"
    result = cli("call", "dev", "measure", "300", "--follow", "--out-dir", str(out))
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.npy"))
    assert files and files[0].name == "000000.npy"
    assert sum(np.load(f).size for f in files) == 300  # the chunks make the whole result


def test_follow_json_lines(cli):
    result = cli("call", "dev", "measure", "200", "--follow", "--json")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    items, final = docs[:-1], docs[-1]
    assert [d["item"] for d in items] == list(range(len(items)))
    assert all(d["value"]["dtype"] == "float64" for d in items)
    assert final["state"] == "done" and final["result"]["shape"] == [200]


def test_out_dir_needs_follow_and_a_folder(cli, tmp_path):
    assert cli("call", "dev", "measure", "10", "--out-dir", str(tmp_path)).exit_code == 2
    afile = tmp_path / "f"
    afile.write_text("x")
    result = cli("call", "dev", "measure", "10", "--follow", "--out-dir", str(afile))
    assert result.exit_code == 2 and "is a file" in result.stderr


def test_watch_and_info_channels(cli):
    result = cli("watch", "dev", "temperature", "--count", "2", "--start", "0")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2
    docs = cli("watch", "dev", "temperature", "--count", "1", "--start", "0", "--json")
    doc = json.loads(docs.stdout)
    assert set(doc) == {"item", "time", "value"} and 15 < doc["value"] < 30
    info = cli("info", "dev")
    assert "channels:" in info.stdout and "temperature" in info.stdout
    assert "[monitor every 1 s]" in info.stdout
    missing = cli("watch", "dev", "nope", "--count", "1")
    assert missing.exit_code == 3 and "temperature" in missing.stderr


def test_follow_as_a_process(cli):
    ns = cli.ns
    done = run_python(
        "-m", "pyroinst", "--ns-host", ns.host, "--ns-port", str(ns.port),
        "call", "dev", "measure", "200", "--follow", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert docs[0]["item"] == 0 and docs[-1]["state"] == "done"

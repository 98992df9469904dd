"""The pyroinst command through typer's CliRunner (in-process servers on free ports)."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pytest
from typer.testing import CliRunner

import pyroinst
from devices.dummy import DummyDevice
from pyroinst.cli import app, parse_call_args
from tests.helpers import Echo, wait_until

runner = CliRunner()


@pytest.fixture
def cli(ns, make_server):
    srv = make_server({"dev": DummyDevice(idn_delay=0.01), "echo": Echo()})

    def invoke(*args, **kwargs):
        return runner.invoke(
            app, ["--ns-host", ns.host, "--ns-port", str(ns.port), *args], **kwargs
        )

    invoke.server = srv
    return invoke


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and pyroinst.__version__ in result.output
    result = runner.invoke(app, ["-h"])
    assert result.exit_code == 0
    assert "Exit codes" in result.output and "130" in result.output


def test_list(cli):
    result = cli("list")
    assert result.exit_code == 0, result.output
    assert "dev" in result.output and "devices.dummy.DummyDevice" in result.output
    data = json.loads(cli("list", "--json").stdout)
    by_name = {d["name"]: d for d in data}
    assert set(by_name) == {"dev", "echo"}
    for key in ("name", "class", "host", "port", "uri", "alive", "server_host"):
        assert key in by_name["dev"]
    assert by_name["dev"]["alive"] is True and by_name["dev"]["host"] == "127.0.0.1"


def test_info(cli):
    result = cli("info", "dev")
    assert result.exit_code == 0, result.output
    assert "stand-in instrument" in result.output
    assert "measure(time: int)" in result.output and "[job]" in result.output
    data = json.loads(cli("info", "echo", "--json").stdout)
    assert data["class"] == "tests.helpers.Echo"
    assert {"name", "class", "doc", "methods", "properties", "jobs"} <= set(data)


def test_call_plain_method(cli):
    result = cli("call", "echo", "echo", "[1, 2.5, 'x']")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "[1, 2.5, 'x']"
    result = cli("call", "echo", "echo", "value=hello")
    assert result.stdout.strip() == "hello"
    data = json.loads(cli("call", "echo", "echo", "{'a': 1}", "--json").stdout)
    assert data["result"] == {"a": 1} and data["method"] == "echo"


def test_call_job_writes_npy(cli, tmp_path):
    out = tmp_path / "m.npy"
    result = cli("call", "dev", "measure", "200", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "array dtype float64, shape (200,)" in result.stdout
    data = np.load(out)
    assert data.shape == (200,) and data.dtype == np.float64


@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_call_job_writes_text(cli, tmp_path, suffix):
    out = tmp_path / f"m{suffix}"
    result = cli("call", "echo", "big", "7", "--out", str(out))
    assert result.exit_code == 0, result.output
    loaded = np.loadtxt(out, delimiter="," if suffix == ".csv" else None)
    assert loaded.tolist() == list(range(7))


def test_call_json_job(cli):
    data = json.loads(cli("call", "echo", "big", "4", "--json").stdout)
    assert data["state"] == "done" and data["progress"] == 1.0
    assert data["result"]["shape"] == [4] and data["result"]["max"] == 3.0


def test_call_no_wait_prints_only_the_id(cli):
    result = cli("call", "dev", "measure", "100", "--no-wait")
    assert result.exit_code == 0
    job_id = result.stdout.strip()
    assert len(job_id.split()) == 1
    result = cli("job", "dev", job_id, "--wait", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"]["shape"] == [100]
    # a plain method with --no-wait runs as a job too
    job_id = cli("call", "echo", "echo", "5", "--no-wait").stdout.strip()
    assert cli("job", "echo", job_id, "--wait").stdout.strip() == "5"


def test_jobs_and_job(cli):
    job_id = cli("call", "echo", "hold", "30", "--no-wait").stdout.strip()
    wait_until(
        lambda: json.loads(cli("job", "echo", job_id, "--json").stdout)["state"] == "running"
    )
    listed = json.loads(cli("jobs", "echo", "--json").stdout)
    assert listed[0]["id"] == job_id
    assert job_id in cli("jobs", "echo").stdout
    result = cli("job", "echo", job_id, "--cancel")
    assert result.exit_code == 0 and "cancel" in result.stdout
    assert json.loads(cli("job", "echo", job_id, "--json").stdout)["state"] == "cancelled"
    result = cli("job", "echo", job_id, "--wait")
    assert result.exit_code == 1 and "cancelled" in result.stderr


def test_ping(cli):
    result = cli("ping")
    assert result.exit_code == 0 and "name server" in result.stdout
    result = cli("ping", "dev")
    assert result.exit_code == 0 and "dev: ok" in result.stdout


def test_parse_call_args():
    args, kwargs = parse_call_args(["1", "2.5", "[1,2]", "hello", "n=3", "s='x y'", "a=b=c"])
    assert args == [1, 2.5, [1, 2], "hello"]
    assert kwargs == {"n": 3, "s": "x y", "a": "b=c"}


# -- bad input: one line on stderr, the documented exit code, no traceback -----------------
def one_line_error(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.output)
    # Piped, a job's progress is one line at its start and one at its end; then the error.
    progress = re.compile(r"^job \w+ \(.*\) (started|(done|failed|cancelled) after .*)$")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not progress.match(ln)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_device(cli):
    one_line_error(cli("call", "nope", "idn"), 3, "'nope'", "devices there: dev, echo")
    one_line_error(cli("info", "nope"), 3, "'nope'")
    assert cli("ping", "dev").exit_code == 0  # still serving


def test_unknown_method(cli):
    one_line_error(cli("call", "dev", "nope"), 3, "no method 'nope'", "measure")


def test_argument_not_fitting_signature(cli):
    one_line_error(cli("call", "dev", "measure", "1", "2"), 2, "measure(time: int)")
    one_line_error(cli("call", "dev", "measure", "bogus=1"), 2, "measure(time: int)")


def test_device_raises(cli):
    one_line_error(cli("call", "echo", "fail", "overheated"), 1, "DriverError", "overheated")
    one_line_error(cli("call", "echo", "failing_job"), 1, "DriverError")
    result = cli("-v", "call", "echo", "fail")
    assert result.exit_code == 1 and "Traceback" in result.stderr  # -v shows it


def test_unknown_job(cli):
    one_line_error(cli("job", "dev", "deadbeef"), 3, "deadbeef")


def test_no_name_server():
    port = free_port()
    result = runner.invoke(app, ["--ns-host", "127.0.0.1", "--ns-port", str(port), "list"])
    one_line_error(result, 3, f"127.0.0.1:{port}", "pyroinst ns")


def test_lab_file_missing(tmp_path):
    one_line_error(runner.invoke(app, ["serve", str(tmp_path / "nope.toml")]), 2, "not found")


def write(tmp_path, text):
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return str(path)


def test_lab_file_invalid_toml(tmp_path):
    path = write(tmp_path, '[server]\nhost = "x"\nport = = 3\n')
    one_line_error(runner.invoke(app, ["serve", path]), 2, "invalid TOML", "line 3")


def test_lab_file_unknown_key(tmp_path):
    path = write(tmp_path, '[devices.dev]\nclass = "devices.dummy:DummyDevice"\nkwarg = {}\n')
    one_line_error(runner.invoke(app, ["serve", path]), 2, "[devices.dev]", "'kwarg'")
    path = write(tmp_path, "[server]\nhots = 'x'\n")
    one_line_error(runner.invoke(app, ["serve", path]), 2, "[server]", "'hots'")


def test_lab_file_bad_value(tmp_path):
    path = write(tmp_path, '[server]\nport = "eighty"\n')
    one_line_error(runner.invoke(app, ["serve", path]), 2, "port", "port number")


def test_lab_file_class_not_importable(tmp_path, ns):
    path = write(tmp_path, '[devices.dev]\nclass = "no_such_module.sub:Thing"\n')
    one_line_error(
        runner.invoke(app, ["serve", path, "--ns-host", ns.host, "--ns-port", str(ns.port)]),
        2,
        "'no_such_module.sub'",
    )
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        assert "dev" not in nsp.list()


def test_device_constructor_raises(tmp_path, ns):
    path = write(
        tmp_path,
        (
            '[devices.good]\nclass = "tests.helpers:Echo"\n'
            '[devices.bad]\nclass = "devices.dummy:DummyDevice"\nkwargs = { idn_delay = "slow" }\n'
        ),
    )
    result = runner.invoke(app, ["serve", path, "--ns-host", ns.host, "--ns-port", str(ns.port)])
    one_line_error(result, 1, "device 'bad'")
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        names = nsp.list()
    assert "good" not in names and "bad" not in names  # nothing half-registered


def test_port_in_use(tmp_path, ns):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = runner.invoke(
            app,
            [
                "serve",
                "--demo",
                "--port",
                str(port),
                "--ns-host",
                ns.host,
                "--ns-port",
                str(ns.port),
            ],
        )
    one_line_error(result, 1, f"127.0.0.1:{port}")
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        assert "dev" not in nsp.list()


def test_name_held_by_live_server(cli, ns):
    result = runner.invoke(
        app, ["serve", "--demo", "--ns-host", ns.host, "--ns-port", str(ns.port)]
    )
    one_line_error(result, 1, "'dev'", "live server")
    assert cli("call", "echo", "echo", "1").exit_code == 0


def test_serve_needs_lab_or_demo():
    one_line_error(runner.invoke(app, ["serve"]), 2, "--demo")


def test_readme_lab_file_block_is_valid():
    import re
    import tomllib

    from pyroinst.config import parse_lab
    from tests import docs

    block = re.search(r"### Lab files.*?```toml\n(.*?)```", docs.page("cli.md"), re.S).group(1)
    lab = parse_lab(tomllib.loads(block))
    assert lab.server["advertise"] == "lab-pc-2"
    assert lab.devices[0].kwargs == {"idn_delay": 0.5}
    lab.import_classes()


def test_ns_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = runner.invoke(app, ["ns", "--host", "127.0.0.1", "--port", str(port)])
    one_line_error(result, 1, f"127.0.0.1:{port}")


def test_shell_completion_is_available():
    """`pyroinst --install-completion` exists; the completion it installs completes."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import ROOT, clean_env

    script = str(Path(sys.executable).parent / "pyroinst")  # the installed command

    shown = subprocess.run(
        [script, "--show-completion", "bash"],
        cwd=ROOT,
        # The shell named, not guessed from the processes above this one (typer's switch
        # for that; without it the option takes no value and a test run by anything but
        # a shell would find none).
        env=clean_env(_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "_pyroinst_completion" in shown.stdout, shown.stderr
    helped = subprocess.run(
        [script, "--help"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--install-completion" in helped.stdout
    completed = subprocess.run(
        [script],
        cwd=ROOT,
        env=clean_env(_PYROINST_COMPLETE="complete_bash", COMP_WORDS="pyroinst ca", COMP_CWORD="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.stdout.split() == ["call"], completed.stdout + completed.stderr


def test_a_list_is_json_a_table_or_says_it_is_empty(capsys: pytest.CaptureFixture[str]) -> None:
    from pyroinst.cli.output import listing

    items = [{"name": "a\nb", "n": 1}, {"name": "c", "n": 22}]
    header = ["name", "n"]

    def row(item: dict) -> list:
        return [item["name"], item["n"]]

    listing([], False, "no jobs", header, row)
    assert capsys.readouterr().out == "no jobs\n"
    listing(items, True, "no jobs", header, row)
    assert json.loads(capsys.readouterr().out) == items
    listing(items, False, "no jobs", header, row)
    lines = capsys.readouterr().out.splitlines()
    # A header, one line per item, columns aligned; a newline in a value is shown escaped.
    assert lines == ["name  n", "a\\nb  1", "c     22"]

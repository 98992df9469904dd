"""What a newcomer met in the first hour with the CLI, each fixed and kept fixed."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from devices.dummy import DummyDevice
from pyroinst.cli import app
from tests import docs
from tests.helpers import ROOT, Echo, clean_env, run_python, wait_until

runner = CliRunner()
PYROINST = [sys.executable, "-m", "pyroinst"]


@pytest.fixture
def lab(ns, make_server):
    echo = Echo()
    srv = make_server({"dev": DummyDevice(idn_delay=0.01), "echo": echo})

    def invoke(*args):
        return runner.invoke(app, ["--ns-host", ns.host, "--ns-port", str(ns.port), *args])

    invoke.server = srv
    invoke.echo = echo
    invoke.ns = ns
    return invoke


def _jobs(lab, device):
    return lab.server._servants[device].job_list()


# -- serve --demo against a name server that already runs --------------------------------------
def test_serve_demo_prints_the_name_server_it_found_and_a_line_that_works(ns):
    # The name server is found through Pyro5's own settings, not --ns-host/--ns-port.
    env = clean_env(PYRO_NS_HOST=ns.host, PYRO_NS_PORT=str(ns.port))
    proc = subprocess.Popen(
        [*PYROINST, "serve", "--demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not any(line.startswith("Ctrl-C") for line in lines):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        text = "".join(lines)
        assert f"name server {ns.host}:{ns.port}" in text and "None" not in text, text
        paste = next(line for line in lines if " -c " in line).strip()
        assert f"PYRONAME:dev@{ns.host}:{ns.port}" in paste
        command = re.search(r' -c "(.*)"$', paste).group(1)
        ran = run_python("-c", command, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert "devices.dummy.DummyDevice" in ran.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_demo_with_embedded_name_server_logs_no_warning(tmp_path):
    env = clean_env(PYROINST_NS_HOST="127.0.0.1", PYROINST_NS_PORT="0")
    err = tmp_path / "err.log"
    with open(err, "w") as log:
        proc = subprocess.Popen(
            [*PYROINST, "serve", "--demo"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            while True:
                line = proc.stdout.readline()
                assert line, err.read_text()
                if line.startswith("Ctrl-C"):
                    break
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    text = err.read_text()
    assert "started an embedded one" in text
    assert "WARNING" not in text, text
    embedded = next(line for line in text.splitlines() if "started an embedded one" in line)
    assert " INFO " in embedded


# -- arguments -------------------------------------------------------------------------------
def test_unknown_keyword_is_named_with_the_signature(lab):
    result = lab("call", "dev", "measure", "tme=500")
    assert result.exit_code == 2, result.output
    assert "'tme'" in result.stderr and "measure(time: int)" in result.stderr
    assert "Traceback" not in result.output
    assert _jobs(lab, "dev") == []  # nothing started
    result = lab("call", "echo", "echo", "valeu=1", "vlaue=2")
    assert result.exit_code == 2 and "'valeu'" in result.stderr and "'vlaue'" in result.stderr
    assert lab("call", "echo", "echo", "3").stdout.strip() == "3"  # still serving


def test_negative_number_error_says_to_write_double_dash(lab):
    result = lab("call", "echo", "echo", "-5")
    assert result.exit_code == 2
    assert "-5" in result.output and "--" in result.output and "pyroinst call" in result.output
    result = lab("call", "echo", "echo", "--", "-5")
    assert result.exit_code == 0 and result.stdout.strip() == "-5"


def test_none_result_prints_nothing(lab):
    result = lab("call", "echo", "echo", "None")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


# -- --out -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["m.xyz", "missing-folder/m.npy", "m"])
def test_bad_out_is_refused_before_the_job_starts(lab, tmp_path, name):
    out = tmp_path / name
    result = lab("call", "dev", "measure", "20000", "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "--out" in result.stderr
    assert _jobs(lab, "dev") == []
    assert not out.exists()


def test_out_that_is_a_folder_is_refused(lab, tmp_path):
    result = lab("call", "dev", "measure", "20000", "--out", str(tmp_path))
    assert result.exit_code == 2 and "folder" in result.stderr
    assert _jobs(lab, "dev") == []


def test_non_array_result_with_out_is_a_clear_error(lab, tmp_path):
    out = tmp_path / "x.npy"
    result = lab("call", "dev", "idn", "--out", str(out))
    assert result.exit_code == 2, result.output
    assert "str" in result.stderr and "--out" in result.stderr
    assert result.stdout.startswith("pyroinst,DummyDevice,")  # the result is not lost
    assert not out.exists()


def test_write_failing_after_the_job_names_the_job_and_how_to_fetch_it(lab, tmp_path):
    folder = tmp_path / "gone"
    folder.mkdir()
    out = folder / "m.npy"
    lab.echo.gate.clear()

    def remove_folder_once_running():
        wait_until(lambda: any(j["state"] == "running" for j in _jobs(lab, "echo")), 30)
        shutil.rmtree(folder)
        lab.echo.gate.set()

    remover = threading.Thread(target=remove_folder_once_running)
    remover.start()
    try:
        result = lab("call", "echo", "hold_array", "30", "--out", str(out))
    finally:
        lab.echo.gate.set()
        remover.join(30)
    assert result.exit_code == 1, result.output
    job_id = _jobs(lab, "echo")[0]["id"]
    assert job_id in result.stderr and f"pyroinst job echo {job_id} --out" in result.stderr
    again = tmp_path / "again.npy"
    fetched = lab("job", "echo", job_id, "--out", str(again))
    assert fetched.exit_code == 0, fetched.output
    assert again.exists()


# -- progress ------------------------------------------------------------------------------------
def test_piped_progress_prints_a_line_at_start_and_at_end(lab):
    result = lab("call", "dev", "measure", "100")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(re.match(r"job \w+ \(measure on dev\) started", ln) for ln in lines), lines
    assert any(re.match(r"job \w+ \(measure\) done after [\d.]+ s", ln) for ln in lines), lines


def test_terminal_progress_shows_queued_what_it_waits_for_and_elapsed(lab):
    first = lab("call", "echo", "hold", "60", "--no-wait").stdout.strip()
    wait_until(lambda: _jobs(lab, "echo")[0]["state"] == "running")
    controller, terminal = pty.openpty()
    env = clean_env(COLUMNS="160", TERM="xterm")
    proc = subprocess.Popen(
        [*PYROINST, "--ns-host", lab.ns.host, "--ns-port", str(lab.ns.port)]
        + ["call", "echo", "big", "5"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"elapsed" not in seen or b"waiting for" not in seen:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(controller, 65536)
                except OSError:
                    break
        lab.echo.gate.set()  # the first job ends; the queued one runs
        out, _ = proc.communicate(timeout=30)
    finally:
        lab.echo.gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(controller)
    text = seen.decode(errors="replace")
    assert "queued" in text and f"waiting for job {first} (hold)" in text, text
    assert "elapsed" in text
    assert proc.returncode == 0 and b"shape (5,)" in out


def test_timeout_exits_1_and_the_readme_says_so(lab):
    result = lab("call", "echo", "hold", "30", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "left running" in result.stderr
    lab.echo.gate.set()
    cli = docs.page("cli.md")
    codes = cli[cli.index("Exit codes:") :].split("\n\n")[0]
    assert "--timeout" in codes

"""`pyroinst service`: systemd units for a server and for the name server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyroinst.cli import app
from tests.helpers import ROOT

runner = CliRunner()
LAB = ROOT / "examples" / "lab.toml"
TOKEN = "s3cret-lab-token-4711"


def fields(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            found.setdefault(key, []).append(value)
    return found


def verify(tmp_path: Path, text: str, name: str) -> None:
    if shutil.which("systemd-analyze") is None:
        return  # checked where systemd is installed
    unit = tmp_path / name
    unit.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_server_unit(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("PYROINST_TOKEN", TOKEN)
    result = runner.invoke(app, ["--token-file", str(token_file), "service", str(LAB)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert TOKEN not in result.output  # never the token itself
    unit = fields(text)
    start = unit["ExecStart"][0].split()
    assert Path(start[0]).is_absolute() and Path(start[0]).name in ("pyroinst", "python3")
    assert start[-2:] == ["serve", str(LAB)]
    assert unit["Restart"] == ["on-failure"]
    assert unit["WorkingDirectory"] == [str(LAB.parent)]
    assert unit["After"] == ["network-online.target"]
    assert unit["LoadCredential"] == [f"pyroinst-token:{token_file}"]
    assert "${CREDENTIALS_DIRECTORY}/pyroinst-token" in unit["ExecStart"][0]
    verify(tmp_path, text, "pyroinst-lab.service")


def test_token_from_the_environment_is_not_written(monkeypatch):
    monkeypatch.setenv("PYROINST_TOKEN", TOKEN)
    result = runner.invoke(app, ["service", str(LAB)])
    assert result.exit_code == 0
    assert TOKEN not in result.stdout and "--token-file" in result.stderr


def test_name_server_unit(tmp_path):
    result = runner.invoke(app, ["service", "--ns", "--host", "10.0.0.5", "--port", "9091"])
    assert result.exit_code == 0, result.output
    unit = fields(result.stdout)
    start = unit["ExecStart"][0]
    assert " ns --host 10.0.0.5 --port 9091 --storage %S/pyroinst/names.db" in start
    assert unit["StateDirectory"] == ["pyroinst"] and unit["Restart"] == ["on-failure"]
    verify(tmp_path, result.stdout, "pyroinst-ns.service")


def test_install_as_a_user_unit(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = runner.invoke(app, ["service", str(LAB), "--install", "--user"])
    assert result.exit_code == 0, result.output
    written = tmp_path / ".config" / "systemd" / "user" / "pyroinst-lab.service"
    assert written.exists() and "ExecStart=" in written.read_text()
    assert "systemctl --user enable --now pyroinst-lab.service" in result.stdout
    assert "journalctl --user -u pyroinst-lab.service" in result.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [([], "give a lab file"), (["--ns", str(LAB)], "not both"), (["missing.toml"], "missing")],
)
def test_bad_service_arguments(args, fragment):
    result = runner.invoke(app, ["service", *args])
    assert result.exit_code == 2 and fragment in result.stderr

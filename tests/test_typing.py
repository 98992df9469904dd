"""The public client API is typed: a client script passes ``mypy --strict``, and the
package says it is typed (``py.typed``, also in the wheel: see .ci/smoke)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, clean_env

pytest.importorskip("mypy")

SCRIPT = Path(__file__).parent / "typing" / "client.py"


def mypy(tmp_path: Path, script: Path) -> subprocess.CompletedProcess:
    # pyroinst as the wheel holds it (the same sources), errors reported for the script only.
    env = clean_env(MYPYPATH=str(ROOT))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(script),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_client_script_passes_mypy_strict(tmp_path):
    assert (ROOT / "pyroinst" / "py.typed").exists()
    done = mypy(tmp_path, SCRIPT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_sees_the_types(tmp_path):
    """The check can fail: a wrong use of the API is reported."""
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import pyroinst\ndef f(job: pyroinst.JobHandle) -> str:\n    return job.wait(1.0)\n"
    )
    done = mypy(tmp_path, wrong)
    assert done.returncode == 1
    assert 'Incompatible return value type (got "bool", expected "str")' in done.stdout

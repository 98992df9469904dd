"""A small run of bench/load.py: no errors, no lost results, threads back to baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_small_load_run():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYRO_", "PYROINST_")) or k == "PYROINST_STATE_DIR"
    }
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--clients",
            "3",
            "--calls",
            "200",
            "--jobs",
            "30",
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["errors"] == 0, report["error_samples"]
    assert report["lost_results"] == 0
    assert report["threads_after"] <= report["threads_before"]
    # Retention bounds memory: 90 small results cannot grow the server by much.
    assert report["server_peak_rss_mb"] - report["server_rss_before_mb"] < 200

"""bench/lab.py runs (its --quick form) and reports every figure for each size."""

from __future__ import annotations

from tests.helpers import run_python


def test_lab_bench_quick():
    done = run_python("bench/lab.py", "--quick", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("| ")]
    header, rows = lines[0], lines[1:]  # the |---| line does not start with "| "
    for column in ("all listed after", "`pyroinst list`", "name server CPU", "PYRONAME"):
        assert column in header
    assert [r.split("|")[1].strip() for r in rows] == ["100", "400"]
    assert all("s (1 stopped)" in r for r in rows)

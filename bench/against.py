"""This checkout against another (the previous main), taking turns, for the figures a
change could make worse.

    git worktree add /tmp/previous <commit>
    python bench/against.py /tmp/previous [--rounds 5]

Each checkout's pyroinst serves from its own process (``bench.servers pyroinst``) and is
measured by clients importing it (``bench.clients``, ``bench.live``); the benchmark's own
code is this checkout's for both (a copy, run beside the other's pyroinst), so only
pyroinst differs. The two take turns in every round, and each figure is the median of the
rounds. Prints a Markdown table with both and their
ratio (this / other, for times; other / this, for rates: above 1 is better for this).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench.common import env  # noqa: E402

#: (label, workload and arguments, figure in the JSON, True if higher is better, cpus)
WORKLOADS = [
    ("W1 small call, one core (plain Proxy)", ("pyroinst", "w1", 2000), "median", False, {0}),
    ("W1 small call, one core (connect())", ("pyroinst-connect", "w1", 2000), "median", False, {0}),
    ("W2s 1 KB returned, one core", ("pyroinst", "w2", 128, 1000), "median", False, {0}),
    ("W2s 64 KB returned, one core", ("pyroinst", "w2", 8192, 1000), "median", False, {0}),
    (
        "W2s 64 KB returned, one core (connect())",
        ("pyroinst-connect", "w2", 8192, 1000),
        "median",
        False,
        {0},
    ),
    ("W2u 1e3 upload", ("pyroinst", "w2u", 1000, 1000), "median", False, None),
    ("W2 1e7 fetch", ("pyroinst", "w2", 10**7, 5), "mbps", True, None),
    ("W2u 1e7 upload", ("pyroinst", "w2u", 10**7, 5), "mbps", True, None),
    ("W4 calls/s, 8 threads", ("pyroinst", "w4", 8, 2.0), "calls_per_s", True, None),
    ("W7 1 MiB frames, one reader", ("live", "w7", 1000, 1), "mbps", True, None),
]


def _run(bench: Path, tree: Path, address: str, work: tuple, cpus: set[int] | None) -> dict:
    kind, workload, *args = work
    if kind == "live":
        cmd = [sys.executable, "-m", "bench.live", *address.split(), workload, *map(str, args)]
    else:
        cmd = [sys.executable, "-m", "bench.clients", kind, address, workload, *map(str, args)]
    proc = subprocess.run(
        cmd,
        cwd=bench,
        env=env(tree),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: {work} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (a git worktree)")
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    trees = {"this": HERE, "other": opts.other.resolve()}
    if not (trees["other"] / "pyroinst" / "__init__.py").exists():
        raise SystemExit(f"{trees['other']} is not a pyroinst checkout")
    bench = Path(tempfile.mkdtemp(prefix="pyroinst-against-"))
    shutil.copytree(HERE / "bench", bench / "bench")
    servers = {}
    for name, tree in trees.items():
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", "pyroinst"],
            cwd=bench,
            env=env(tree),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        servers[name] = (proc, proc.stdout.readline().strip())
    rows = []
    try:
        for label, work, field, higher, cpus in WORKLOADS:
            seen: dict[str, list[float]] = {name: [] for name in trees}
            for _ in range(opts.rounds):
                for name, tree in trees.items():
                    proc, address = servers[name]
                    for tid in os.listdir(f"/proc/{proc.pid}/task"):
                        try:
                            os.sched_setaffinity(int(tid), cpus or set(range(os.cpu_count() or 1)))
                        except ProcessLookupError:
                            pass
                    seen[name].append(_run(bench, tree, address, work, cpus)[field])
            this, other = (statistics.median(seen[n]) for n in ("this", "other"))
            ratio = this / other if higher else other / this
            rows.append((label, field, this, other, ratio))
    finally:
        for proc, _ in servers.values():
            proc.stdin.close()
            proc.wait(30)
        shutil.rmtree(bench, ignore_errors=True)
    print(f"## this checkout against {trees['other']} ({opts.rounds} rounds, taking turns)\n")
    print("| figure | measure | this | other | better by |")
    print("|---|---|---|---|---|")
    for label, field, this, other, ratio in rows:
        scale = 1e6 if field == "median" else 1
        unit = " µs" if field == "median" else ""
        print(
            f"| {label} | {field} | {this * scale:.1f}{unit} | {other * scale:.1f}{unit} | "
            f"{ratio:.2f} × |"
        )


if __name__ == "__main__":
    main()

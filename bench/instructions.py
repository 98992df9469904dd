"""Instructions per call, client and server, counted by valgrind: figures that do not
depend on the machine's load.

    python bench/instructions.py [--against OTHER_CHECKOUT] [--workloads noop,fetch128,...]

On a shared or virtual machine a call's time varies by tens of percent from run to run;
the number of instructions it executes does not (to a fraction of a percent). Each figure
is the difference between two runs of N and N + 1000 calls, divided by 1000, so start-up
and imports cancel out. The client side runs the client under valgrind (the server
outside); the server side runs the server under valgrind (the client outside). Kernel
work (system calls, copies) is not counted: for large arrays time it with bench.py.

Kinds: ``pyroinst`` (a plain Pyro5 proxy with pyroinst imported), ``pyroinst-connect``
(``pyroinst.connect()``) and ``raw-msgpack`` (plain Pyro5, no pyroinst anywhere; served
by ``bench.servers pyro``). Workloads: ``noop``, ``fetchN`` (an array of N float64
returned), ``upN`` (an array of N float64 uploaded). With ``--against``, the pyroinst
kinds are counted for the other checkout too (its pyroinst, this checkout's bench code).

Needs valgrind (Debian's ``valgrind`` package); without it, says so and exits 0.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench.common import env  # noqa: E402

#: Calls of the shorter run; the longer one makes STEP more.
BASE_CALLS = 200
STEP = 1000


def _env(tree: Path) -> dict[str, str]:
    out = env(tree)
    # numpy's BLAS threads spin at start-up: their instructions would vary from run to run.
    out.update(PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return out


def _counted(err: str) -> int:
    found = re.search(r"I\s+refs:\s+([\d,]+)", err)
    if not found:
        raise SystemExit(f"valgrind printed no instruction count:\n{err[-2000:]}")
    return int(found.group(1).replace(",", ""))


_VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]

#: One client run: ``python -c CLIENT TREE KIND WORK CALLS`` (its server outside valgrind).
_CLIENT = """
import sys
tree, kind, work, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, tree)
from bench.common import Server
from bench.instructions import call_of
server = Server("pyro" if kind == "raw-msgpack" else "pyroinst")
try:
    call = call_of(kind, server.address, work)
    for _ in range(100 + calls):
        call()
finally:
    server.stop()
"""

#: The calls of a server-side run: ``python -c DRIVER TREE KIND WORK CALLS ADDRESS``.
_DRIVER = """
import sys
tree, kind, work, calls, address = sys.argv[1:6]
sys.path.insert(0, tree)
from bench.instructions import call_of
call = call_of(kind, address, work)
for _ in range(100 + int(calls)):
    call()
"""


def call_of(kind: str, address: str, work: str):  # noqa: ANN201 - a callable
    """The call a run repeats: ``work`` on a fresh target of ``kind``."""
    import numpy as np

    from bench.clients import make_target

    target = make_target(kind, address)
    if work == "noop":
        return target.noop
    if work.startswith("fetch"):
        n = int(work[5:])
        return lambda: target.fetch(n)
    if work.startswith("up"):
        a = np.arange(int(work[2:]), dtype=np.float64)
        return lambda: target.upload(a)
    raise SystemExit(f"unknown workload {work}")


def client_side(tree: Path, bench_tree: Path, kind: str, work: str) -> int:
    """Client instructions per call."""

    def run(calls: int) -> int:
        proc = subprocess.run(
            [*_VALGRIND, sys.executable, "-c", _CLIENT, str(bench_tree), kind, work, str(calls)],
            cwd=bench_tree,
            env=_env(tree),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise SystemExit(f"client run failed:\n{proc.stderr[-2000:]}")
        return _counted(proc.stderr)

    return (run(BASE_CALLS + STEP) - run(BASE_CALLS)) // STEP


def server_side(tree: Path, bench_tree: Path, kind: str, work: str) -> int:
    """Server instructions per call."""

    def run(calls: int) -> int:
        proc = subprocess.Popen(
            [*_VALGRIND, sys.executable, "-m", "bench.servers"]
            + ["pyro" if kind == "raw-msgpack" else "pyroinst"],
            cwd=bench_tree,
            env=_env(tree),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            address = proc.stdout.readline().strip()
            # The calls from a plain process (raw-msgpack's must not import pyroinst).
            subprocess.run(
                [sys.executable, "-c", _DRIVER, str(bench_tree), kind, work, str(calls), address],
                cwd=bench_tree,
                env=_env(tree),
                check=True,
                timeout=600,
            )
        finally:
            proc.stdin.close()  # the server ends; valgrind prints its count
        err = proc.stderr.read()
        proc.wait(60)
        return _counted(err)

    return (run(BASE_CALLS + STEP) - run(BASE_CALLS)) // STEP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout (a git worktree)")
    parser.add_argument("--workloads", default="noop,fetch128,fetch8192,up1024")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind): nothing counted")
        return
    trees = [("this", HERE)]
    if args.against:
        # Its pyroinst beside a copy of this checkout's bench code.
        copy = Path(tempfile.mkdtemp(prefix="pyroinst-other-"))
        shutil.copytree(args.against / "pyroinst", copy / "pyroinst")
        shutil.copytree(HERE / "bench", copy / "bench")
        trees.append(("other", copy))
    print("| workload | kind | checkout | client | server | both | × plain Pyro5 |")
    print("|---|---|---|---|---|---|---|")
    for work in args.workloads.split(","):
        raw_c = client_side(HERE, HERE, "raw-msgpack", work)
        raw_s = server_side(HERE, HERE, "raw-msgpack", work)
        raw = raw_c + raw_s
        print(f"| {work} | raw-msgpack | - | {raw_c:,} | {raw_s:,} | {raw:,} | 1.00 |", flush=True)
        for name, tree in trees:
            server = server_side(tree, tree, "pyroinst", work)
            for kind in ("pyroinst", "pyroinst-connect"):
                client = client_side(tree, tree, kind, work)
                both = client + server
                print(
                    f"| {work} | {kind} | {name} | {client:,} | {server:,} | {both:,} "
                    f"| {both / raw:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

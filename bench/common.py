"""What bench.py and its row modules share: servers in processes, client runs, formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
MIB_POINTS = MIB // 8
#: Client kinds served by bench/peers.py (ZeroMQ, rpyc); the others by bench/clients.py.
PEER_KINDS = ("zmq", "rpyc")


def env(tree: Path | None = None) -> dict[str, str]:
    """The environment of every server and client: the checkout ``tree`` (default this
    one) first on the path, no PYRO_/PYROINST_ settings of the caller's."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PYRO_", "PYROINST_"))}
    out["PYTHONPATH"] = str(ROOT if tree is None else tree)
    return out


class Server:
    """One benchmark server in its own process (``bench.servers KIND`` or, for a peer,
    ``bench.peers serve KIND``); ``address`` is what it printed."""

    def __init__(self, kind: str) -> None:
        module = ["bench.peers", "serve"] if kind in PEER_KINDS else ["bench.servers"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *module, kind],
            cwd=ROOT,
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            raise SystemExit(f"{kind} server did not start")

    def status(self, key: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def reset_peak(self) -> None:
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def pin(self, cpus: set[int] | None) -> None:
        """Restrict every thread of the server to ``cpus`` (None: all CPUs again)."""
        cpus = cpus or set(range(os.cpu_count() or 1))
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:
                pass  # a thread that ended meanwhile

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client_command(kind: str, address: str, workload: str, *args: object) -> list[str]:
    """The command line of one client run."""
    if kind in PEER_KINDS:
        module = ["bench.peers", "client", kind]
    else:
        module = ["bench.clients", kind]
    return [sys.executable, "-m", *module, address, workload, *map(str, args)]


def client(kind: str, address: str, workload: str, *args: object, cpus=None) -> dict:
    """Run one workload in a fresh client process (on ``cpus`` if given); its JSON result."""
    proc = subprocess.run(
        client_command(kind, address, workload, *args),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} {workload} {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clients_at_once(
    kind: str, address: str, count: int, seconds: float, split: dict | None = None
) -> float:
    """``count`` client processes calling as fast as they can for the same ``seconds``
    (each starts, connects and makes a first call; then all are told to go at once):
    their calls/s together.

    ``split`` (a dict with ``server_pid``): filled with the CPU each call cost the clients
    (their own CPU time while timed) and the server (its CPU time from "go" to the last
    client's answer), in seconds per call.
    """
    procs = [
        subprocess.Popen(
            client_command(kind, address, "w4", 1, seconds, "gate"),
            cwd=ROOT,
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for proc in procs:
            # A client that fails before it is ready closes its stdout: "" here.
            if proc.stdout.readline().strip() != "ready":
                proc.wait(timeout=60)
                raise SystemExit(f"{kind} w4 process failed:\n{proc.stderr.read()}")
        server_pid = None if split is None else split["server_pid"]
        server_before = None if server_pid is None else process_cpu(server_pid)
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        total = 0.0
        answers = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise SystemExit(f"{kind} w4 process failed:\n{err}")
            answers.append(json.loads(out))
            total += answers[-1]["calls_per_s"]
        calls = sum(a.get("calls", 0) for a in answers)
        if split is not None and calls and all("cpu_s" in a for a in answers):
            split["clients"] = sum(a["cpu_s"] for a in answers) / calls
            if server_pid is not None:
                split["server"] = (process_cpu(server_pid) - server_before) / calls
        return total
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"

"""The lab benchmark: how the cost of a lab grows with its number of devices.

    python bench/lab.py            # 100, 1,000 and 5,000 devices on 20 servers
    python bench/lab.py --big      # ... and 10,000
    python bench/lab.py --quick    # 100 and 400 devices on 4 servers (under a minute)

For each size, on 127.0.0.1, every server in its own process and the name server
(``pyroinst ns --storage``) in its own: the time until every device is listed, a
``list_devices()``, ``pyroinst list`` with every server alive and with 10 % of them
stopped (SIGSTOP, a frozen PC), the name server's CPU in steady state (heartbeats and
autoclean; percent of one core), server memory per device, 1,000 ``PYRONAME:`` lookups
by a client, and the time until every name is listed again after the name server is
killed (-9) and started again on its storage. Prints a Markdown table and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import Pyro5.core  # noqa: E402

import pyroinst  # noqa: E402
from bench.common import env  # noqa: E402

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_ns(port: int, storage: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyroinst", "-q", "ns", "--host", HOST, "--port", str(port)]
        + ["--storage", str(storage)],
        cwd=ROOT,
        env=env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if not proc.stdout.readline().startswith("name server at"):
        raise SystemExit("the name server did not start")
    return proc


def count_listed(port: int) -> int:
    try:
        with pyroinst.locate_ns(HOST, port, timeout=5) as ns:
            return len(ns.yplookup(meta_all={"pyroinst.device"}, return_metadata=False))
    except pyroinst.PyroinstError:
        return -1


def wait_listed(port: int, total: int, timeout: float = 600) -> float:
    start = time.perf_counter()
    while count_listed(port) < total:
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"not all {total} devices were listed within {timeout} s")
        time.sleep(0.05)
    return time.perf_counter() - start


def cli_list(port: int) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pyroinst", "--ns-host", HOST, "--ns-port", str(port)]
        + ["list", "--json"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pyroinst list failed: {done.stderr}")
    return elapsed, json.loads(done.stdout)


def measure(devices: int, servers: int, window: float) -> dict[str, float]:
    """Every figure for one lab size."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="pyroinst-lab-"))
    storage = tmp / "names.db"
    procs: list[subprocess.Popen] = []
    ns = start_ns(port, storage)
    try:
        per = [devices // servers + (1 if i < devices % servers else 0) for i in range(servers)]
        began = time.perf_counter()
        for i, count in enumerate(per):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.labserver", HOST, str(port), str(count)]
                    + [f"s{i}d"],
                    cwd=ROOT,
                    env=env(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        base = [int(p.stdout.readline().split()[1]) for p in procs]
        register = wait_listed(port, devices)
        register_all = time.perf_counter() - began
        for p in procs:
            assert p.stdout.readline().strip() == "READY"
        times = []
        for _ in range(3):
            start = time.perf_counter()
            listed = pyroinst.list_devices(HOST, port)
            times.append(time.perf_counter() - start)
        assert len(listed) == devices
        cli_alive, entries = cli_list(port)
        assert all(e["alive"] for e in entries), [e for e in entries if not e["alive"]][:3]
        stopped = procs[: max(1, servers // 10)]
        for p in stopped:
            os.kill(p.pid, signal.SIGSTOP)
        try:
            cli_stopped, entries = cli_list(port)
        finally:
            for p in stopped:
                os.kill(p.pid, signal.SIGCONT)
        down = sum(1 for e in entries if not e["alive"])
        assert down == sum(per[: len(stopped)]), down
        cpu0 = cpu_seconds(ns.pid)
        time.sleep(window)  # steady state: heartbeats and autoclean only
        ns_cpu = (cpu_seconds(ns.pid) - cpu0) / window * 100
        per_device = (sum(rss(p.pid) for p in procs) - sum(base)) / devices
        names = [e["name"] for e in entries][:1000]
        start = time.perf_counter()
        for i in range(1000):
            Pyro5.core.resolve(f"PYRONAME:{names[i % len(names)]}@{HOST}:{port}")
        lookups = time.perf_counter() - start
        ns.kill()
        ns.wait(10)
        ns.stdout.close()
        start = time.perf_counter()
        ns = start_ns(port, storage)
        wait_listed(port, devices, timeout=60)
        restart = time.perf_counter() - start
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            p.stdout.close()
        ns.send_signal(signal.SIGTERM)
        ns.wait(30)
        ns.stdout.close()
        storage.unlink(missing_ok=True)
        tmp.rmdir()
    return {
        "devices": devices,
        "servers": servers,
        "register_s": register_all,
        "listed_s": register,
        "list_devices_s": statistics.median(times),
        "cli_list_s": cli_alive,
        "cli_list_stopped_s": cli_stopped,
        "stopped_servers": len(stopped),
        "ns_cpu_pct": ns_cpu,
        "rss_per_device_kb": per_device / 1024,
        "pyroname_1000_s": lookups,
        "ns_restart_s": restart,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, short windows")
    parser.add_argument("--big", action="store_true", help="also 10,000 devices")
    opts = parser.parse_args()
    if opts.quick:
        sizes, servers, window = [100, 400], 4, 2.0
    else:
        sizes, servers, window = [100, 1000, 5000] + ([10_000] if opts.big else []), 20, 30.0
    began = time.time()
    rows = [measure(n, servers, window) for n in sizes]
    print(
        f"## pyroinst lab benchmark ({'quick' if opts.quick else 'full'} run, "
        f"{time.time() - began:.0f} s)\n"
    )
    print(
        "| devices | servers | all listed after | list_devices() | `pyroinst list` | "
        "`pyroinst list`, servers stopped | name server CPU | server RSS per device | "
        "1,000 PYRONAME lookups | names back after kill -9 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['servers']} | {r['register_s']:.2f} s | "
            f"{r['list_devices_s'] * 1000:.0f} ms | {r['cli_list_s']:.2f} s | "
            f"{r['cli_list_stopped_s']:.2f} s ({r['stopped_servers']} stopped) | "
            f"{r['ns_cpu_pct']:.1f} % | {r['rss_per_device_kb']:.0f} KiB | "
            f"{r['pyroname_1000_s']:.2f} s | {r['ns_restart_s']:.2f} s |"
        )
    by = {r["devices"]: r for r in rows}
    checks = []
    if 1000 in by:
        r = by[1000]
        checks += [
            (
                "`pyroinst list`, 1,000 devices, all alive ≤ 2 s",
                f"{r['cli_list_s']:.2f} s",
                r["cli_list_s"] <= 2,
            ),
            (
                "`pyroinst list`, 1,000 devices, 2 servers stopped ≤ 2 s",
                f"{r['cli_list_stopped_s']:.2f} s",
                r["cli_list_stopped_s"] <= 2,
            ),
            (
                "all 1,000 names back ≤ 2 s after a kill -9",
                f"{r['ns_restart_s']:.2f} s",
                r["ns_restart_s"] <= 2,
            ),
        ]
    if 5000 in by:
        r = by[5000]
        checks.append(
            (
                "name server CPU, 5,000 devices ≤ 10 % of a core",
                f"{r['ns_cpu_pct']:.1f} %",
                r["ns_cpu_pct"] <= 10,
            )
        )
        small = by[1000]
        for key in ("register_s", "list_devices_s", "cli_list_s", "ns_cpu_pct", "ns_restart_s"):
            growth = r[key] / max(small[key], 1e-9)
            checks.append(
                (
                    f"{key}: 1,000 → 5,000 grows ≤ 5 × (linear; 10 % slack)",
                    f"{growth:.1f} ×",
                    growth <= 5.5,
                )
            )
    if checks:
        print("\n| target | measured | met |\n|---|---|---|")
        for name, value, ok in checks:
            print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()

"""pyroinst benchmark: pyroinst against raw Pyro5 and a raw TCP socket, in one run.

    python bench/bench.py            # full run (a few minutes)
    python bench/bench.py --quick    # under a minute

Every server runs in its own process on 127.0.0.1 and serves the same device
(``bench/benchdev.py``); every client workload runs in a fresh process, so a raw-Pyro5
client never has pyroinst imported. Prints a Markdown table: each figure, its ratio to
the baselines of the same run, and the acceptance targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYRO_", "PYROINST_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


class Server:
    def __init__(self, kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", kind],
            cwd=ROOT,
            env=_env(),
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
            os.sched_setaffinity(int(tid), cpus)

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client(kind: str, address: str, workload: str, *args: object, cpus=None) -> dict:
    """Run one workload in a fresh client process (on ``cpus`` if given); its JSON result."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.clients", kind, address, workload, *map(str, args)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} {workload} {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def versions() -> str:
    import msgpack
    import numpy
    import Pyro5
    import serpent

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}; Python "
        f"{platform.python_version()}, Pyro5 {Pyro5.__version__}, msgpack "
        f"{'.'.join(map(str, msgpack.version))}, serpent {serpent.__version__}, "
        f"numpy {numpy.__version__}"
    )


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def live(address: str, workload: str, *args: object) -> dict:
    """Run one live-data workload (bench/live.py) in a fresh client process."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.live", *address.split(), workload, *map(str, args)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise SystemExit(f"live {workload} {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def live_rows(
    quick: bool, address: str, tcp_address: str, server: Server, rows: list, checks: list
) -> None:
    """W7-W10: live data (job streams), against raw TCP and plain calls of the same run."""
    frames = 100 if quick else 300
    tcp = client("tcp", tcp_address, "w2", MIB_POINTS, 5 if quick else 20)["mbps"]
    one = live(address, "w7", frames, 1)
    alone = live(address, "w7", frames, 0)["job_wall"]
    four = live(address, "w7", frames, 4)["job_wall"]
    rows.append(
        (
            "W7 1 MiB frames, one reader",
            "pyroinst",
            f"{one['mbps']:.0f} MB/s",
            f"{one['mbps'] / tcp:.2f} × TCP ({tcp:.0f} MB/s, 1 MiB messages)",
        )
    )
    rows.append(
        (
            "W7 job wall time, four readers",
            "pyroinst",
            fmt_time(four),
            f"{four / alone:.2f} × no reader ({fmt_time(alone)})",
        )
    )
    checks.append(
        ("W7 one reader ≥ 0.6 × raw TCP", f"{one['mbps'] / tcp:.2f}", one["mbps"] / tcp >= 0.6)
    )
    checks.append(
        ("W7 job with four readers ≤ 1.1 × without", f"{four / alone:.2f}", four / alone <= 1.1)
    )

    w8 = live(address, "w8", 20_000 if quick else 100_000)
    rows.append(
        (
            "W8 small items to one reader",
            "pyroinst",
            f"{w8['items_per_s']:.0f} items/s",
            f"{w8['dropped']} dropped",
        )
    )
    checks.append(("W8 ≥ 50,000 items/s", f"{w8['items_per_s']:.0f}", w8["items_per_s"] >= 50_000))

    w9 = live(address, "w9", 50 if quick else 200)
    ratio = w9["median"] / w9["call"]
    rows.append(
        (
            "W9 publish to reader latency",
            "pyroinst",
            f"median {fmt_time(w9['median'])}",
            f"{ratio:.2f} × plain call paced alike ({fmt_time(w9['call'])}; back to back "
            f"{fmt_time(w9['hot_call'])})",
        )
    )
    checks.append(("W9 median ≤ 2 × plain call", f"{ratio:.2f}", ratio <= 2))

    count, stall = (1500, 2.0) if quick else (4000, 10.0)
    before = live(address, "w10", count, 0)["job_wall"]
    rss_before = server.status("VmRSS")
    server.reset_peak()
    w10 = live(address, "w10", count, stall)
    growth = server.status("VmHWM") - rss_before
    # The same job without a reader, before and after: the machine's drift evens out.
    base = (before + live(address, "w10", count, 0)["job_wall"]) / 2
    bound = 64 * MIB
    rows.append(
        (
            f"W10 reader stalled {stall:g} s",
            "pyroinst",
            f"job {fmt_time(w10['job_wall'])}, server +{growth / 1e6:.0f} MB, "
            f"{w10['read']} read + {w10['dropped']} dropped of {count}",
            f"{w10['job_wall'] / base:.2f} × no reader; {growth / bound:.2f} × the bound",
        )
    )
    checks.append(
        (
            "W10 job as fast as without the reader (≤ 1.1 ×)",
            f"{w10['job_wall'] / base:.2f}",
            w10["job_wall"] / base <= 1.1,
        )
    )
    checks.append(
        (
            "W10 server growth within the 64 MiB bound (≤ 1.25 ×)",
            f"{growth / bound:.2f}",
            growth <= 1.25 * bound,
        )
    )
    checks.append(
        ("W10 dropped is exactly what the reader lost", str(w10["exact"]), bool(w10["exact"]))
    )


MIB = 1 << 20
MIB_POINTS = MIB // 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    opts = parser.parse_args()
    quick = opts.quick
    sizes = [1e3, 1e6, 1e7] if quick else [1e3, 1e6, 1e7, 5e7]
    reps = {1e3: 50 if quick else 200, 1e6: 5 if quick else 20, 1e7: 3 if quick else 7, 5e7: 3}
    serpent_max = 1e7

    began = time.time()
    servers = {kind: Server(kind) for kind in ("pyroinst", "pyro", "tcp")}
    addr = {
        "pyroinst": servers["pyroinst"].address,
        "raw-msgpack": servers["pyro"].address,
        "raw-serpent": servers["pyro"].address,
        "tcp": servers["tcp"].address,
    }
    rows: list[tuple[str, str, str, str]] = []
    checks: list[tuple[str, str, bool]] = []
    try:
        calls = 500 if quick else 3000
        # Latency here is bimodal: when client and server share a core a call costs their
        # CPU time; across cores the wake-up latency dominates, and left alone the
        # scheduler picks one or the other from run to run. So W1 is measured in both
        # placements, pinned: client and server on one core (what pyroinst's code costs),
        # and client on one core, server on the other.
        cores = os.cpu_count() or 1
        placements = [("W1 latency, one core", {0}, {0})]
        if cores > 1:
            placements.append(("W1 latency, two cores", {0}, {1}))
        for label, client_cpus, server_cpus in placements:
            for srv in servers.values():
                srv.pin(server_cpus)
            w1 = {k: client(k, addr[k], "w1", calls, cpus=client_cpus) for k in addr}
            base = w1["raw-msgpack"]["median"]
            for k, r in w1.items():
                rows.append(
                    (
                        label,
                        k,
                        f"median {fmt_time(r['median'])}, p99 {fmt_time(r['p99'])}",
                        f"{r['median'] / base:.2f} × raw msgpack",
                    )
                )
            ratio = w1["pyroinst"]["median"] / base
            checks.append((f"{label} ≤ 1.2 × raw Pyro5 msgpack", f"{ratio:.2f}", ratio <= 1.2))
        for srv in servers.values():
            srv.pin(None)

        for direction, workload in (("W2 fetch", "w2"), ("W2u upload", "w2u")):
            for n in sizes:
                res = {}
                for k in addr:
                    if k == "raw-serpent" and n > serpent_max:
                        continue
                    res[k] = client(k, addr[k], workload, int(n), reps[n])
                tcp = res["tcp"]["mbps"]
                for k, r in res.items():
                    extra = ""
                    if "raw-serpent" in res and k != "raw-serpent":
                        extra = f", {r['mbps'] / res['raw-serpent']['mbps']:.1f} × serpent"
                    rows.append(
                        (
                            f"{direction} {n:.0e} pts ({n * 8 / 1e6:g} MB)",
                            k,
                            f"{fmt_time(r['median'])}, {r['mbps']:.0f} MB/s",
                            f"{r['mbps'] / tcp:.2f} × TCP{extra}",
                        )
                    )
                if n == 1e7:
                    ratio = res["pyroinst"]["mbps"] / tcp
                    if workload == "w2":
                        checks.append(("W2 1e7 ≥ 0.5 × raw TCP", f"{ratio:.2f}", ratio >= 0.5))
                        sr = res["pyroinst"]["mbps"] / res["raw-serpent"]["mbps"]
                        checks.append(("W2 1e7 ≥ 10 × raw Pyro5 serpent", f"{sr:.1f}", sr >= 10))
                    else:
                        checks.append(("W2u 1e7 ≥ 0.4 × raw TCP", f"{ratio:.2f}", ratio >= 0.4))

        w3 = client("pyroinst", addr["pyroinst"], "w3", 3 if quick else 7)
        ratio = w3["median"] / w3["ideal"]
        rows.append(
            (
                "W3 16 jobs × 0.2 s on 16 devices",
                "pyroinst",
                fmt_time(w3["median"]),
                f"{ratio:.2f} × ideal",
            )
        )
        checks.append(("W3 ≤ 1.25 × ideal", f"{ratio:.2f}", ratio <= 1.25))

        # Eight threads on two cores: throughput drifts with scheduling, so the targets
        # take turns over several short rounds and each keeps its median.
        seconds, rounds = (1.0, 3) if quick else (2.0, 5)
        samples: dict[str, list[float]] = {k: [] for k in addr}
        for _ in range(rounds):
            for k in addr:
                samples[k].append(client(k, addr[k], "w4", 4, seconds)["calls_per_s"])
        w4 = {k: {"calls_per_s": statistics.median(v)} for k, v in samples.items()}
        base = w4["raw-msgpack"]["calls_per_s"]
        for k, r in w4.items():
            rows.append(
                (
                    f"W4 calls/s, 4 threads (median of {rounds} rounds)",
                    k,
                    f"{r['calls_per_s']:.0f}/s",
                    f"{r['calls_per_s'] / base:.2f} × raw msgpack",
                )
            )
        ratio = w4["pyroinst"]["calls_per_s"] / base
        checks.append(("W4 ≥ 0.8 × raw Pyro5 msgpack", f"{ratio:.2f}", ratio >= 0.8))

        w5 = client("pyroinst", addr["pyroinst"], "w5", 100 if quick else 500)
        r1 = w5["start_result"] / w5["plain"]
        r2 = w5["start_wait_result"] / w5["plain"]
        rows.append(
            (
                "W5 no-op job: start + result()",
                "pyroinst",
                fmt_time(w5["start_result"]),
                f"{r1:.2f} × plain call ({fmt_time(w5['plain'])})",
            )
        )
        rows.append(
            (
                "W5 no-op job: start + wait() + result()",
                "pyroinst",
                fmt_time(w5["start_wait_result"]),
                f"{r2:.2f} × plain call",
            )
        )
        checks.append(("W5 ≤ 3 × plain call (start + result)", f"{r1:.2f}", r1 <= 3))

        for k in ("pyroinst", "raw-msgpack", "tcp"):
            srv = servers["pyroinst" if k == "pyroinst" else ("pyro" if k != "tcp" else "tcp")]
            client(k, addr[k], "w2", 1e7, 1)  # server made and cached its array
            rss_before = srv.status("VmRSS")
            srv.reset_peak()
            w6 = client(k, addr[k], "w6", 1e7)
            server_growth = srv.status("VmHWM") - rss_before
            size = w6["array_bytes"]
            rows.append(
                (
                    "W6 peak RSS growth, one 1e7 fetch",
                    k,
                    f"client {w6['client_growth'] / 1e6:.0f} MB, server "
                    f"{server_growth / 1e6:.0f} MB",
                    f"client {w6['client_growth'] / size:.2f} ×, server "
                    f"{server_growth / size:.2f} × the array",
                )
            )
            if k == "pyroinst":
                ratio = w6["client_growth"] / size
                checks.append(("W6 client growth ≤ 2.5 × array", f"{ratio:.2f}", ratio <= 2.5))
        live_rows(quick, addr["pyroinst"], addr["tcp"], servers["pyroinst"], rows, checks)
    finally:
        for srv in servers.values():
            srv.stop()

    print(
        f"## pyroinst benchmark ({'quick' if quick else 'full'} run, {time.time() - began:.0f} s)\n"
    )
    print(f"Machine: {versions()}\n")
    print("| workload | row | figure | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n| target | measured | met |")
    print("|---|---|---|")
    for name, value, ok in checks:
        print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()

"""pyroinst benchmark: pyroinst against raw Pyro5, a raw TCP socket and the peers users
would pick instead (ZeroMQ REQ/REP + msgpack, rpyc), in one run.

    python bench/bench.py            # full run (about seven minutes)
    python bench/bench.py --quick    # a few minutes

Every server runs in its own process on 127.0.0.1 and serves the same device
(``bench/benchdev.py``); every client workload runs in a fresh process, so a raw-Pyro5
client never has pyroinst imported. The peers (``bench/peers.py``) run when installed
(``pip install pyroinst[bench]``); otherwise their rows are skipped with a note. Prints a
Markdown table: each figure, its ratio to the baselines of the same run, and the
acceptance targets.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script: this folder is first on the path, and its bench.py would be "bench".
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as peer_module  # noqa: E402
from bench.common import Server, client, clients_at_once, fmt_time  # noqa: E402
from bench.liverows import live_rows  # noqa: E402


def peer_versions() -> str:
    out = ""
    try:
        import zmq

        out += f", pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()})"
    except ImportError:
        pass
    try:
        import rpyc

        out += f", rpyc {rpyc.__version__}"
    except ImportError:
        pass
    return out


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
        f"numpy {numpy.__version__}{peer_versions()}"
    )


#: Turns each kind takes in W1 and W2s (a full run).
SMALL_TURNS = 5


def taking_turns(kinds: list[str], rounds: int, measure: Any) -> dict[str, float]:
    """``measure(kind)`` for every kind, the kinds taking turns for ``rounds`` rounds (the
    machine drifts: turns spread it over all of them); each kind's median."""
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for k in kinds:
            samples[k].append(measure(k))
    return {k: statistics.median(v) for k, v in samples.items()}


def rate_rows(rows: list, label: str, rates: dict[str, float]) -> float:
    """A row per kind of calls per second against raw msgpack; pyroinst's ratio."""
    base = rates["raw-msgpack"]
    for k, r in rates.items():
        rows.append((label, k, f"{r:.0f}/s", f"{r / base:.2f} × raw msgpack"))
    return rates["pyroinst"] / base


def cpu_rows(rows: list, splits: dict[str, list[dict]], raw_rate: float, cores: int) -> list[str]:
    """W4p's CPU per call, clients and server (medians of the rounds), and what it implies:
    the calls/s of these clients if the server cost nothing (every core theirs), and the
    server CPU per call that 2 × raw Pyro5's rate would leave room for. Returns a note for
    pyroinst saying which."""
    notes = []
    for k, samples in splits.items():
        if not samples:
            continue
        clients = statistics.median(s["clients"] for s in samples)
        server = statistics.median(s["server"] for s in samples)
        ceiling = cores / clients
        rows.append(
            (
                "W4p CPU per call (median of the rounds)",
                k,
                f"clients {fmt_time(clients)}, server {fmt_time(server)}",
                f"free-server ceiling {ceiling:.0f}/s = {ceiling / raw_rate:.2f} × raw msgpack",
            )
        )
        if k != "pyroinst":
            continue
        room = cores / (2 * raw_rate) - clients  # server CPU per call 2 × raw leaves
        if room <= 0:
            notes.append(
                f"W4p: pyroinst's client processes (plain Pyro5 proxies) use {fmt_time(clients)} "
                f"of CPU per call; on {cores} cores they could make {ceiling:.0f} calls/s even "
                f"if the server cost nothing, {ceiling / raw_rate:.2f} × raw Pyro5's rate in "
                "this run: the ≥ 2 × target is out of any server's reach here"
            )
        else:
            notes.append(
                f"W4p: with its clients at {fmt_time(clients)} of CPU per call, 2 × raw Pyro5's "
                f"rate in this run leaves a server {fmt_time(room)} of CPU per call on "
                f"{cores} cores; pyroinst's used {fmt_time(server)}"
            )
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    opts = parser.parse_args()
    quick = opts.quick
    sizes = [1e3, 1e6, 1e7] if quick else [1e3, 1e6, 1e7, 5e7]
    reps = {1e3: 50 if quick else 200, 1e6: 5 if quick else 20, 1e7: 3 if quick else 7, 5e7: 3}
    serpent_max = 1e7
    rpyc_max = 1e6  # rpyc moves a few MB/s: larger arrays would take minutes

    began = time.time()
    servers = {kind: Server(kind) for kind in ("pyroinst", "pyro", "tcp")}
    notes: list[str] = []
    peer_kinds = []
    for kind, ok in peer_module.available().items():
        if ok:
            servers[kind] = Server(kind)
            peer_kinds.append(kind)
        else:
            notes.append(
                f"{kind} not installed: its rows are skipped (pip install pyroinst[bench])"
            )
    addr = {
        "pyroinst": servers["pyroinst"].address,
        "pyroinst-connect": servers["pyroinst"].address,
        "raw-msgpack": servers["pyro"].address,
        "raw-serpent": servers["pyro"].address,
        "tcp": servers["tcp"].address,
        **{k: servers[k].address for k in peer_kinds},
    }
    rows: list[tuple[str, str, str, str]] = []
    checks: list[tuple[str, str, bool]] = []
    try:
        calls = 500 if quick else 3000
        # The ≤ 1.0 targets of W1 and W2s are within this kind of machine's noise of 1.0:
        # their medians come from more turns than the other rows'.
        turns = 3 if quick else SMALL_TURNS
        # Latency here is bimodal: when client and server share a core a call costs their
        # CPU time; across cores the wake-up latency dominates, and left alone the
        # scheduler picks one or the other from run to run. So W1 is measured in both
        # placements, pinned: client and server on one core (what the code costs), and
        # client on one core, server on the other. Each target takes turns SMALL_TURNS times
        # and keeps its median.
        cores = os.cpu_count() or 1
        placements = [("W1 latency, one core", {0}, {0})]
        if cores > 1:
            placements.append(("W1 latency, two cores", {0}, {1}))
        for label, client_cpus, server_cpus in placements:
            for srv in servers.values():
                srv.pin(server_cpus)
            runs: dict[str, list[dict]] = {k: [] for k in addr}
            for _ in range(turns):
                for k in addr:
                    runs[k].append(client(k, addr[k], "w1", calls, cpus=client_cpus))
            w1 = {
                k: {f: statistics.median(r[f] for r in v) for f in ("median", "p99")}
                for k, v in runs.items()
            }
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
            if label.endswith("one core"):
                for k, how in (("pyroinst", "a plain Proxy"), ("pyroinst-connect", "connect()")):
                    ratio = w1[k]["median"] / base
                    checks.append(
                        (
                            f"{label} ≤ 1.0 × raw Pyro5 msgpack, {how}",
                            f"{ratio:.2f}",
                            ratio <= 1.0,
                        )
                    )
        for srv in servers.values():
            srv.pin(None)

        # Small arrays returned: one call's worth of overhead, taking turns (medians), on
        # one core as W1 (what the code costs; across cores wake-ups dominate).
        for srv in servers.values():
            srv.pin({0})
        small = [("w2", 128, "1 KB array returned"), ("w2", 8192, "64 KB array returned")]
        small.append(("w2u", 1000, "8 KB array uploaded"))
        kinds = ["pyroinst", "pyroinst-connect", "raw-msgpack", "tcp", *peer_kinds]
        small_reps = 300 if quick else 1000
        for workload, n, size in small:
            med = taking_turns(
                kinds,
                turns,
                lambda k, w=workload, n=n: client(k, addr[k], w, n, small_reps, cpus={0})["median"],
            )
            base = med["raw-msgpack"]
            for k in kinds:
                rows.append(
                    (
                        f"W2s {size}, one core (median of {turns})",
                        k,
                        fmt_time(med[k]),
                        f"{med[k] / base:.2f} × raw msgpack",
                    )
                )
            bound = 1.2 if workload == "w2u" else 1.0
            for k, how in (("pyroinst", "a plain Proxy"), ("pyroinst-connect", "connect()")):
                ratio = med[k] / base
                checks.append(
                    (
                        f"W2s {size} ≤ {bound} × raw Pyro5 msgpack, {how}",
                        f"{ratio:.2f}",
                        ratio <= bound,
                    )
                )

        for srv in servers.values():
            srv.pin(None)

        for direction, workload in (("W2 fetch", "w2"), ("W2u upload", "w2u")):
            for n in sizes:
                res = {}
                for k in ("pyroinst", "raw-msgpack", "raw-serpent", "tcp", *peer_kinds):
                    if k == "raw-serpent" and n > serpent_max:
                        continue
                    if k == "rpyc" and n > rpyc_max:
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
        for k in peer_kinds:
            r = client(k, addr[k], "w3", 3 if quick else 7)
            rows.append(
                (
                    "W3 16 jobs × 0.2 s on 16 devices",
                    k,
                    fmt_time(r["median"]),
                    f"{r['median'] / r['ideal']:.2f} × ideal",
                )
            )

        # Many threads on two cores: throughput drifts with scheduling, so the targets
        # take turns over several short rounds and each keeps its median.
        seconds, rounds = (1.0, 3) if quick else (2.0, 5)
        for threads in (4, 8):
            kinds = ["pyroinst", "raw-msgpack", "raw-serpent", "tcp"]
            if threads == 8:
                kinds = ["pyroinst", "pyroinst-connect", "raw-msgpack", "tcp", *peer_kinds]
            w4 = taking_turns(
                kinds,
                rounds,
                lambda k, n=threads: client(k, addr[k], "w4", n, seconds)["calls_per_s"],
            )
            ratio = rate_rows(
                rows, f"W4 calls/s, {threads} threads (median of {rounds} rounds)", w4
            )
            if threads == 4:
                checks.append(("W4 ≥ 0.8 × raw Pyro5 msgpack", f"{ratio:.2f}", ratio >= 0.8))
            else:
                checks.append(
                    ("W4 8 threads ≥ 2 × raw Pyro5 msgpack", f"{ratio:.2f}", ratio >= 2.0)
                )
        # W4p's clients and servers share the two cores: where each call's CPU goes tells
        # how far any server could go with these clients (see cpu_rows).
        splits: dict[str, list[dict]] = {"pyroinst": [], "raw-msgpack": []}
        server_of = {"pyroinst": servers["pyroinst"], "raw-msgpack": servers["pyro"]}

        def w4p_round(k: str) -> float:
            split = {"server_pid": server_of[k].proc.pid} if k in splits else None
            rate = clients_at_once(k, addr[k], 8, seconds, split)
            if split is not None and "clients" in split:
                splits[k].append(split)
            return rate

        w4p = taking_turns(["pyroinst", "raw-msgpack", "tcp", *peer_kinds], rounds, w4p_round)
        label = f"W4p calls/s, 8 client processes (median of {rounds} rounds)"
        ratio = rate_rows(rows, label, w4p)
        checks.append(("W4p 8 processes ≥ 2 × raw Pyro5 msgpack", f"{ratio:.2f}", ratio >= 2.0))
        notes.extend(cpu_rows(rows, splits, w4p["raw-msgpack"], os.cpu_count() or 1))

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
        live_rows(
            quick,
            addr["pyroinst"],
            addr["tcp"],
            {k: addr[k] for k in peer_kinds if k == "zmq" or not quick},
            servers["pyroinst"],
            rows,
            checks,
        )

        # W12: the first large transfer after a pause (warm receive buffers). Raw TCP takes
        # turns with it: what a pause costs this machine's memory and kernel by themselves
        # (after one, a virtual machine's first touch of much memory can be slow).
        w12: dict[str, tuple[list[float], list[float]]] = {"pyroinst": ([], []), "tcp": ([], [])}
        for _ in range(3):
            for k, (firsts, repeats) in w12.items():
                r = client(k, addr[k], "w12", 1e7, 3.0, 3)
                firsts.append(r["first"])
                repeats.append(r["repeated"])
        for k, (firsts, repeats) in w12.items():
            first, repeated = statistics.median(firsts), statistics.median(repeats)
            rows.append(
                (
                    "W12 80 MB fetch after 3 s idle (median of 3)",
                    k,
                    f"first {fmt_time(first)}, repeated {fmt_time(repeated)}",
                    f"{first / repeated:.2f} × repeated, first − repeated "
                    f"{fmt_time(first - repeated)}",
                )
            )
        first, repeated = (statistics.median(v) for v in w12["pyroinst"])
        checks.append(
            (
                "W12 first after idle ≤ 1.5 × repeated",
                f"{first / repeated:.2f}",
                first / repeated <= 1.5,
            )
        )
    finally:
        for srv in servers.values():
            srv.stop()

    print(
        f"## pyroinst benchmark ({'quick' if quick else 'full'} run, {time.time() - began:.0f} s)\n"
    )
    print(f"Machine: {versions()}\n")
    for note in notes:
        print(f"Note: {note}\n")
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

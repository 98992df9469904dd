"""The benchmark's live-data rows (W7-W10), run by bench.py."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

from bench.common import MIB, MIB_POINTS, ROOT, client, env, fmt_time


def live(address: str, workload: str, *args: object) -> dict:
    """Run one live-data workload (bench/live.py) in a fresh client process."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.live", *address.split(), workload, *map(str, args)],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise SystemExit(f"live {workload} {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def live_rows(
    quick: bool,
    address: str,
    tcp_address: str,
    peers: dict[str, str],
    server: Any,
    rows: list,
    checks: list,
) -> None:
    """W7-W10: live data (job streams), against raw TCP, the peers (``peers``: kind to
    address) and plain calls of the same run."""
    frames = 300 if quick else 1000
    # Throughput drifts with the machine: pyroinst, raw TCP and the peers take turns over
    # three rounds, and each keeps its median.
    samples: dict[str, list[float]] = {"pyroinst": [], "tcp": []}
    for kind in peers:
        samples[kind] = []
    for _ in range(3):
        samples["pyroinst"].append(live(address, "w7", frames, 1)["mbps"])
        samples["tcp"].append(client("tcp", tcp_address, "w2", MIB_POINTS, 20)["mbps"])
        for kind, peer_address in peers.items():
            count = frames if kind == "zmq" else frames // 10  # rpyc: one call per frame
            samples[kind].append(client(kind, peer_address, "w7", count)["mbps"])
    mbps = {k: statistics.median(v) for k, v in samples.items()}
    tcp = mbps["tcp"]
    for kind, value in mbps.items():
        if kind == "tcp":
            continue
        how = {"pyroinst": "job stream", "zmq": "PUSH/PULL", "rpyc": "a call per frame"}[kind]
        rows.append(
            (
                "W7 1 MiB frames, one reader (median of 3)",
                f"{kind} ({how})",
                f"{value:.0f} MB/s",
                f"{value / tcp:.2f} × TCP ({tcp:.0f} MB/s, 1 MiB messages)",
            )
        )
    one = mbps["pyroinst"]
    checks.append(("W7 one reader ≥ 0.6 × raw TCP", f"{one / tcp:.2f}", one / tcp >= 0.6))
    checks.append(("W7 one reader ≥ 0.85 × raw TCP", f"{one / tcp:.2f}", one / tcp >= 0.85))
    if "zmq" in mbps:
        ratio = one / mbps["zmq"]
        checks.append(("W7 one reader ≥ 1.0 × ZeroMQ PUSH/PULL", f"{ratio:.2f}", ratio >= 1.0))
    alone = live(address, "w7", frames, 0)["job_wall"]
    four = live(address, "w7", frames, 4)["job_wall"]
    rows.append(
        (
            "W7 job wall time, four readers",
            "pyroinst",
            fmt_time(four),
            f"{four / alone:.2f} × no reader ({fmt_time(alone)})",
        )
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

"""Load test: many client processes hammering one server's devices with calls and jobs.

    python bench/load.py                          # 8 clients x (2000 calls + 200 jobs), 4 devices
    python bench/load.py --clients 2 --calls 100 --jobs 20 --json

The server (its own process) serves the bench device ``--devices`` times, keeping up to
``--max-jobs`` finished jobs. Each client process makes its plain calls, starts its jobs
(each returns an array of a known content), then fetches and checks every result.
Reports calls/s, jobs/s, errors, lost results (a result missing or different), the
server's peak RSS, and its thread count before the load and after the clients left.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import env  # noqa: E402

SERVER = """
import socket, sys
import pyroinst
from bench.benchdev import JOBS, BenchDevice
devices, max_jobs = int(sys.argv[1]), int(sys.argv[2])
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    ns_port = s.getsockname()[1]
server = pyroinst.InstServer(ns_host="127.0.0.1", ns_port=ns_port, max_jobs=max_jobs)
for i in range(devices):
    server.add_device(BenchDevice(), f"load{i}", jobs=JOBS)
with server:
    print(f"127.0.0.1 {ns_port}", flush=True)
    sys.stdin.read()
"""

CLIENT = """
import json, sys, time
import numpy as np
import pyroinst
from bench.benchdev import make_array
host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls, jobs = int(sys.argv[4]), int(sys.argv[5])
errors, lost = [], 0
dev = pyroinst.connect(name, host, port)
start = time.perf_counter()
for _ in range(calls):
    try:
        dev.noop()
    except Exception as exc:
        errors.append(repr(exc))
calls_done = time.perf_counter()
handles = []
for i in range(jobs):
    try:
        handles.append((100 + i % 50, dev.job_start("array", 100 + i % 50)))
    except Exception as exc:
        errors.append(repr(exc))
for n, handle in handles:
    try:
        if not np.array_equal(handle.result(60), make_array(n)):
            lost += 1
    except pyroinst.JobNotFound:
        lost += 1
    except Exception as exc:
        errors.append(repr(exc))
end = time.perf_counter()
print(json.dumps({"calls_s": calls_done - start, "jobs_s": end - calls_done,
                  "errors": errors[:5], "error_count": len(errors), "lost": lost}))
"""


def proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                value = int(line.split()[1])
                return value * 1024 if key.startswith("Vm") else value
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--max-jobs", type=int, default=4000, help="server's retention count")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    opts = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(opts.devices), str(opts.max_jobs)],
        cwd=ROOT,
        env=env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        host, port = server.stdout.readline().split()
        # Warm up: every device's worker thread exists before the baseline is taken.
        import pyroinst

        for i in range(opts.devices):
            with pyroinst.connect(f"load{i}", host, int(port)) as warm:
                warm.noop_job().result(10)
        pyroinst.client.release_cached_proxies()
        # Settle: the pool keeps THREADPOOL_SIZE_MIN idle connection workers.
        time.sleep(0.5)
        threads_before = proc_status(server.pid, "Threads")
        rss_before = proc_status(server.pid, "VmRSS")
        began = time.perf_counter()
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CLIENT,
                    host,
                    port,
                    f"load{i % opts.devices}",
                    str(opts.calls),
                    str(opts.jobs),
                ],
                cwd=ROOT,
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(opts.clients)
        ]
        results = []
        for c in clients:
            out, err = c.communicate(timeout=900)
            if c.returncode != 0:
                results.append(
                    {"calls_s": 0, "jobs_s": 0, "errors": [err[-500:]], "error_count": 1, "lost": 0}
                )
            else:
                results.append(json.loads(out))
        wall = time.perf_counter() - began
        deadline = time.monotonic() + 30
        threads_after = proc_status(server.pid, "Threads")
        while threads_after > threads_before and time.monotonic() < deadline:
            time.sleep(0.2)  # connection workers retire once their clients are gone
            threads_after = proc_status(server.pid, "Threads")
        report = {
            "clients": opts.clients,
            "calls_per_client": opts.calls,
            "jobs_per_client": opts.jobs,
            "devices": opts.devices,
            "wall_s": wall,
            "calls_per_s": opts.clients * opts.calls / max(r["calls_s"] for r in results or [{}]),
            "jobs_per_s": opts.clients * opts.jobs / max(r["jobs_s"] for r in results),
            "errors": sum(r["error_count"] for r in results),
            "error_samples": [e for r in results for e in r["errors"]][:5],
            "lost_results": sum(r["lost"] for r in results),
            "server_rss_before_mb": rss_before / 1e6,
            "server_peak_rss_mb": proc_status(server.pid, "VmHWM") / 1e6,
            "threads_before": threads_before,
            "threads_after": threads_after,
        }
    finally:
        server.stdin.close()
        server.wait(30)
    if opts.json:
        print(json.dumps(report))
    else:
        print(
            f"## load: {opts.clients} clients x ({opts.calls} calls + {opts.jobs} jobs), "
            f"{opts.devices} devices, one server\n"
        )
        print("| figure | value |\n|---|---|")
        for key, value in report.items():
            shown = f"{value:.1f}" if isinstance(value, float) else str(value)
            print(f"| {key} | {shown} |")
    return 0 if report["errors"] == 0 and report["lost_results"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

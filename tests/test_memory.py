"""Memory a server or client keeps after a call: measured from outside, polled, generous.

Each test runs the server (or client) in its own process and reads its resident memory
from /proc; a check passes once the memory is back within its margin, or fails after a
deadline. Margins are generous (100 MB on 200 MB arrays): they catch whole arrays kept
alive, not allocator noise.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import pyroinst
from tests.helpers import ROOT, clean_env, run_python, wait_until

MB = 2**20
pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="needs /proc to read a process's memory"
)


def rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def memory_server(ns):
    procs = []

    def start(*options: str, pool: str = "0") -> subprocess.Popen:
        # PYROINST_RECEIVE_POOL=0 unless a test is about the pool: these tests look for
        # arrays kept alive, and the pool keeps freed buffers on purpose.
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.memory_server", ns.host, str(ns.port), *options],
            cwd=ROOT,
            env=clean_env(PYROINST_RECEIVE_POOL=pool),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "READY"
        return proc

    yield start
    for proc in procs:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def settled_rss(pid: int, below: int, timeout: float = 30.0) -> int:
    """Poll until the RSS of ``pid`` is below ``below`` (fail after ``timeout``)."""
    seen = []

    def low() -> bool:
        seen.append(rss(pid))
        return seen[-1] < below

    try:
        wait_until(low, timeout=timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(
            f"RSS stayed at {seen[-1] / MB:.0f} MB, not below {below / MB:.0f} MB"
        ) from None
    return seen[-1]


@pytest.mark.parametrize("pool", [0, 256])
def test_server_keeps_no_upload_after_the_clients_leave(ns, memory_server, pool):
    """Without the receive pool, the uploads' memory goes; with it, the server keeps at
    most the pool's bound of freed buffers (one 200 MB buffer of 256 MB here)."""
    server = memory_server(pool=f"{pool}M")
    warm = pyroinst.connect("bulk0", ns.host, ns.port)
    assert warm.upload(np.ones(1000)) == 8000
    warm._pyroRelease()
    baseline = rss(server.pid)
    errors = []

    def client(i: int) -> None:
        try:
            dev = pyroinst.connect(f"bulk{i}", ns.host, ns.port)
            a = np.ones(200 * MB // 8)
            assert dev.upload(a) == 200 * MB
            del a
            dev._pyroRelease()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    settled_rss(server.pid, baseline + pool * MB + 100 * MB)


_CLIENT = """
import gc, sys
import numpy as np
import pyroinst
from tests.test_memory import rss
import os
dev = pyroinst.connect("bulk0", sys.argv[1], int(sys.argv[2]))
dev.download(1)
before = rss(os.getpid())
a = dev.download(200)
assert a.nbytes == 200 * 2**20
during = rss(os.getpid())
del a
gc.collect()
pool = pyroinst.receive_pool().stats()
print(before, during, rss(os.getpid()), pool["in_use"], pool["idle_bytes"])
"""


@pytest.mark.parametrize("pool", [0, 256])
def test_client_keeps_no_download_once_the_array_is_gone(ns, memory_server, pool):
    """The array's memory goes with it; with the receive pool, its buffer stays idle in
    the pool (within the pool's bound) for the next download."""
    memory_server()
    env = clean_env(PYROINST_RECEIVE_POOL=f"{pool}M")
    done = run_python("-c", _CLIENT, ns.host, str(ns.port), env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    before, during, after, in_use, idle = (int(n) for n in done.stdout.split())
    assert during > before + 150 * MB  # the array was there...
    assert in_use == 0  # ...no array holds a buffer...
    assert idle <= pool * MB
    kept = (after - before) / MB
    assert after < before + idle + 100 * MB, f"{kept:.0f} MB kept, {idle / MB:.0f} MB in the pool"


def test_worker_keeps_no_finished_job_beyond_retention(ns, memory_server):
    server = memory_server("--max-result-bytes", str(250 * MB))
    baseline = rss(server.pid)
    for i in range(4):
        dev = pyroinst.connect(f"bulk{i}", ns.host, ns.port)
        job = dev.produce(200)
        assert job.wait(60)
        dev._pyroRelease()
    # One 200 MB result fits the 250 MB budget; the other three are evicted and freed.
    settled_rss(server.pid, baseline + 300 * MB)

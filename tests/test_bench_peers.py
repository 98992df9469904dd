"""The benchmark's peers (bench/peers.py) serve and answer every workload bench.py runs.

Figures are not checked (no timings in tests): each workload runs briefly against a real
ZeroMQ or rpyc server in its own process and must return its JSON with sane values.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.peers import available
from tests.helpers import ROOT, clean_env

PEERS = [k for k, ok in available().items() if ok]


@pytest.fixture(params=PEERS or [pytest.param(None, marks=pytest.mark.skip("no peer installed"))])
def peer(request):
    kind = request.param
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.peers", "serve", kind],
        cwd=ROOT,
        env=clean_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    address = proc.stdout.readline().strip()
    assert address, f"{kind} server did not start"
    yield kind, address
    proc.stdin.close()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    proc.stdout.close()


def _client(kind: str, address: str, *args: object) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.peers", "client", kind, address, *map(str, args)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_peer_answers_every_workload(peer):
    kind, address = peer
    assert _client(kind, address, "w1", 50)["median"] > 0
    assert _client(kind, address, "w2", 8192, 5)["mbps"] > 0  # checked equal inside
    assert _client(kind, address, "w2u", 8192, 5)["mbps"] > 0  # verified by the server
    w3 = _client(kind, address, "w3", 1)
    assert w3["median"] >= w3["ideal"] == 0.2  # 16 sleeps at once, not one after another
    assert w3["median"] < 16 * 0.2
    assert _client(kind, address, "w4", 2, 0.3)["calls_per_s"] > 0
    assert _client(kind, address, "w7", 8)["mbps"] > 0  # every frame's bytes counted


def test_bench_knows_which_peers_it_can_run():
    assert set(available()) == {"zmq", "rpyc"}
    assert all(isinstance(ok, bool) for ok in available().values())

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


def test_w4p_says_where_each_calls_cpu_goes():
    """clients_at_once measures the clients' and the server's CPU per call, and cpu_rows
    turns them into rows and the note that the clients alone cap what any server reaches."""
    from bench.bench import cpu_rows
    from bench.common import Server, clients_at_once

    server = Server("pyro")  # plain Pyro5: no pyroinst in the server
    try:
        split = {"server_pid": server.proc.pid}
        rate = clients_at_once("raw-msgpack", server.address, 2, 0.3, split)
    finally:
        server.proc.stdin.close()
        server.proc.wait(20)
        server.proc.stdout.close()
    assert rate > 0
    assert 0 < split["clients"] < 0.05 and 0 < split["server"] < 0.05  # seconds per call
    rows: list = []
    # Pretend raw Pyro5 made as many calls as these clients can: 2 × is out of reach.
    notes = cpu_rows(rows, {"pyroinst": [split], "raw-msgpack": []}, 1 / split["clients"], 1)
    assert len(rows) == 1 and rows[0][1] == "pyroinst" and "ceiling" in rows[0][3]
    assert len(notes) == 1 and "out of any server's reach" in notes[0]
    # Raw Pyro5 at a tenth of that: room is left for a server, and the note says how much.
    notes = cpu_rows([], {"pyroinst": [split]}, 0.1 / split["clients"], 1)
    assert len(notes) == 1 and "leaves a server" in notes[0]

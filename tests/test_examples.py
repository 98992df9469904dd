"""The README's demo pair runs as real processes; SIGINT/SIGTERM stop the server cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pyroinst
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


def names(ns):
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        return set(nsp.yplookup(meta_all={"pyroinst.device"}, return_metadata=False))


def env_for(ns):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYRO_", "PYROINST_")) or k == "PYROINST_STATE_DIR"
    }
    env.update(PYROINST_NS_HOST=ns.host, PYROINST_NS_PORT=str(ns.port), PYTHONPATH=str(ROOT))
    return env


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_example_server_and_client(ns, sig):
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "server.py")],
        env=env_for(ns),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: names(ns) == {"dev", "dev2"}, timeout=30)
        if sig == signal.SIGINT:
            client = subprocess.run(
                [sys.executable, str(ROOT / "examples" / "client.py")],
                env=env_for(ns),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert client.returncode == 0, client.stderr
            assert "idn: pyroinst,DummyDevice" in client.stdout
            assert "shape (2000,), dtype float64" in client.stdout
        server.send_signal(sig)
        out, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, out
    assert names(ns) == set()
    assert "server stopped" in out

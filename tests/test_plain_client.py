"""A client with only Pyro5 and numpy runs the README's lines against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devices.dummy import DummyDevice

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_plain_client() -> str:
    text = README.read_text()
    match = re.search(r"<!-- plain-client -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its plain-client example"
    return match.group(1)


@pytest.mark.parametrize("serializer", ["serpent", "msgpack", "marshal"])
def test_plain_client_runs_readme_lines(ns, make_server, serializer):
    make_server({"dev": DummyDevice(idn_delay=0.01)})
    code = readme_plain_client() + (
        "\nimport sys\n"
        "assert 'pyroinst' not in sys.modules, 'the plain client imported pyroinst'\n"
        "assert isinstance(job, dict) and job['__pyroinst__'] == 'JobHandle'\n"
        "assert data.shape == (1000,) and data.dtype == np.float64\n"
        "print('PLAIN-CLIENT-OK')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYRO_", "PYROINST_"))}
    env.update(PYRO_NS_HOST=ns.host, PYRO_NS_PORT=str(ns.port), PYRO_SERIALIZER=serializer)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "PLAIN-CLIENT-OK" in proc.stdout
    assert "DummyDevice" in proc.stdout  # idn() printed


def test_plain_client_gets_big_arrays_inline(ns, make_server):
    from tests.helpers import Echo

    make_server({"echo": Echo()})
    code = (
        "import Pyro5.api, numpy as np, serpent, sys\n"
        "echo = Pyro5.api.Proxy('PYRONAME:echo')\n"
        "job = echo.big(200000)\n"
        "echo.job_wait(job['id'], 30)\n"
        "r = echo.job_result(job['id'])\n"
        "assert 'ann' not in r and r['__pyroinst__'] == 'ndarray'\n"
        "data = np.frombuffer(serpent.tobytes(r['data']), dtype=r['dtype']).reshape(r['shape'])\n"
        "assert np.array_equal(data, np.arange(200000.0))\n"
        "assert 'pyroinst' not in sys.modules\n"
        "print('BIG-OK')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYRO_", "PYROINST_"))}
    env.update(PYRO_NS_HOST=ns.host, PYRO_NS_PORT=str(ns.port), PYRO_SERIALIZER="msgpack")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "BIG-OK" in proc.stdout

"""A client with only Pyro5 and numpy runs the README's lines against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from devices.dummy import DummyDevice
from tests import docs


def readme_plain_client(marker: str = "plain-client") -> str:
    return textwrap.dedent(docs.block(marker))


def test_plain_client_with_the_token_where_plain_tokens_are_taken():
    """The README's plain client, with its token lines, against a lab that allows it."""
    from pyroinst import EmbeddedNameServer, InstServer

    token = "plain-script-token-31337"
    setup = readme_plain_client("plain-token-client")
    body = readme_plain_client().replace('dev = Pyro5.api.Proxy("PYRONAME:dev")\n', "")
    code = (
        setup
        + body
        + (
            "\nimport sys\n"
            "assert 'pyroinst' not in sys.modules\n"
            "assert data.shape == (1000,)\n"
            "print('PLAIN-TOKEN-OK')\n"
        )
    )
    with EmbeddedNameServer("127.0.0.1", 0, token=token, accept_plain_token=True) as ns:
        server = InstServer(
            ns_host=ns.host, ns_port=ns.port, token=token, accept_plain_token=True, heartbeat=0
        )
        server.add_device(DummyDevice(idn_delay=0.01), "dev")
        with server:
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("PYRO_", "PYROINST_")) or k == "PYROINST_STATE_DIR"
            }
            env.update(PYRO_NS_HOST=ns.host, PYRO_NS_PORT=str(ns.port), PYROINST_TOKEN=token)
            proc = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 0, proc.stderr
            assert "PLAIN-TOKEN-OK" in proc.stdout
            # Without the setting, the same script is told why it is refused.
            strict = InstServer(ns_host=ns.host, ns_port=ns.port, token=token, heartbeat=0)
            strict.add_device(DummyDevice(idn_delay=0.01), "strict")
            with strict:
                refused = subprocess.run(
                    [sys.executable, "-c", code.replace('lookup("dev")', 'lookup("strict")')],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            assert refused.returncode != 0 and "accept_plain_token" in refused.stderr


def test_plain_client_with_marshal_is_told_why(ns, make_server):
    make_server({"dev": DummyDevice(idn_delay=0.01)})
    code = "import Pyro5.api\nPyro5.api.Proxy('PYRONAME:dev').idn()\n"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYRO_", "PYROINST_")) or k == "PYROINST_STATE_DIR"
    }
    env.update(PYRO_NS_HOST=ns.host, PYRO_NS_PORT=str(ns.port), PYRO_SERIALIZER="marshal")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "refuses the marshal serializer" in proc.stderr
    assert "use msgpack" in proc.stderr


@pytest.mark.parametrize("serializer", ["serpent", "msgpack"])
def test_plain_client_runs_readme_lines(ns, make_server, serializer):
    make_server({"dev": DummyDevice(idn_delay=0.01)})
    code = readme_plain_client() + (
        "\nimport sys\n"
        "assert 'pyroinst' not in sys.modules, 'the plain client imported pyroinst'\n"
        "assert isinstance(job, dict) and job['__pyroinst__'] == 'JobHandle'\n"
        "assert data.shape == (1000,) and data.dtype == np.float64\n"
        "print('PLAIN-CLIENT-OK')\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYRO_", "PYROINST_")) or k == "PYROINST_STATE_DIR"
    }
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
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYRO_", "PYROINST_")) or k == "PYROINST_STATE_DIR"
    }
    env.update(PYRO_NS_HOST=ns.host, PYRO_NS_PORT=str(ns.port), PYRO_SERIALIZER="msgpack")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "BIG-OK" in proc.stdout

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import Pyro5.api
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Servers keep their TLS identity in a state folder: the tests' own, never the user's
# (child processes inherit it); removed when the session ends.
_STATE = tempfile.mkdtemp(prefix="pyroinst-test-state-")
os.environ["PYROINST_STATE_DIR"] = _STATE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_STATE, ignore_errors=True)


import pyroinst  # noqa: E402
from pyroinst import EmbeddedNameServer, InstServer  # noqa: E402


@pytest.fixture
def ns():
    """A real Pyro5 name server on 127.0.0.1, free port."""
    server = EmbeddedNameServer("127.0.0.1", 0).start()
    yield server
    server.stop()


@pytest.fixture
def make_server(ns):
    """Factory for InstServers registered with ``ns``; all stopped at the end."""
    servers = []

    def make(devices=None, **kwargs):
        kwargs.setdefault("ns_host", ns.host)
        kwargs.setdefault("ns_port", ns.port)
        srv = InstServer(host="127.0.0.1", port=0, **kwargs)
        for name, dev in (devices or {}).items():
            srv.add_device(dev, name)
        servers.append(srv)
        return srv.start()

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def echo(ns, make_server):
    """A plain Pyro5 proxy of an Echo device ('echo') served for the test."""
    from tests.helpers import Echo

    make_server({"echo": Echo()})
    proxy = Pyro5.api.Proxy(f"PYRONAME:echo@{ns.host}:{ns.port}")
    yield proxy
    proxy._pyroRelease()


@pytest.fixture(autouse=True)
def _no_leaked_proxies():
    yield
    pyroinst.client.release_cached_proxies()


@pytest.fixture(autouse=True)
def _token_restored():
    """The process's lab token as it was: a command run in-process (CliRunner) sets it for
    the process, and later tests would otherwise all run with the token (and TLS)."""
    before = pyroinst.current_token()
    yield
    if pyroinst.current_token() != before:
        pyroinst.set_token(before)
        pyroinst.client.release_cached_proxies()

from __future__ import annotations

import sys
from pathlib import Path

import Pyro5.api
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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

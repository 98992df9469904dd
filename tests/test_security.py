"""What a client can reach, and messages larger than the server accepts."""

from __future__ import annotations

import numpy as np
import Pyro5.api
import pytest
from Pyro5 import config as pyro_config

import pyroinst
from tests.helpers import Echo


@pytest.fixture
def dev(ns, make_server):
    make_server({"dev": Echo()})
    proxy = Pyro5.api.Proxy(f"PYRONAME:dev@{ns.host}:{ns.port}")
    yield proxy
    assert proxy.echo("alive") == "alive"
    proxy._pyroRelease()


@pytest.mark.parametrize(
    "name",
    [
        "_call",
        "_device",
        "__init__",
        "__class__",
        "__dict__",
        "__reduce__",
        "_check_reservation",
        "close",
        "gate",
    ],
)
def test_private_dunder_and_attributes_refused(dev, name):
    dev._pyroBind()
    with pytest.raises(AttributeError):
        dev._pyroInvoke(name, (), {})  # straight to the server, past client-side checks


def test_nothing_is_unpickled_or_instantiated(dev):
    # A dict naming a class is data: it travels escaped and arrives as the same dict,
    # never as a class (Pyro5 alone would refuse it as "unsupported serialized class").
    value = {"__class__": "os.system", "args": ["true"]}
    assert dev.echo(value) == value
    assert dev.echo({"__pyroinst__": "something-else", "x": 1}) == {
        "__pyroinst__": "something-else",
        "x": 1,
    }


def test_oversized_request_refused_clearly(ns, make_server, monkeypatch):
    monkeypatch.setattr(pyro_config, "MAX_MESSAGE_SIZE", pyro_config.MAX_MESSAGE_SIZE)
    make_server({"small": Echo()}, max_message_size=1_000_000)
    small = pyroinst.connect("small", ns.host, ns.port)
    with pytest.raises(pyroinst.MessageTooLarge, match="max_message_size"):
        small.echo(np.zeros(500_000))  # 4 MB to a server that accepts 1 MB
    assert small.echo(1) == 1
    small._pyroRelease()

"""The lab's token: device daemons, job handles and the name server refuse clients without it."""

from __future__ import annotations

import Pyro5.api
import Pyro5.errors
import pytest
from typer.testing import CliRunner

import pyroinst
from pyroinst import EmbeddedNameServer, InstServer
from pyroinst.cli import app
from tests.helpers import Echo

TOKEN = "lab-secret-42"


@pytest.fixture(autouse=True)
def _restore_token():
    before = pyroinst.current_token()
    yield
    pyroinst.set_token(before)
    pyroinst.client.release_cached_proxies()


@pytest.fixture
def ns():
    """The lab's name server, with the lab's token."""
    with EmbeddedNameServer("127.0.0.1", 0, token=TOKEN) as server:
        yield server


@pytest.fixture
def secured(ns):
    server = InstServer(ns_host=ns.host, ns_port=ns.port, token=TOKEN)
    server.add_device(Echo(), "dev")
    with server:
        yield server


def plain(uri, handshake=None):
    pyroinst.set_token(None)
    proxy = Pyro5.api.Proxy(uri)
    if handshake is not None:
        proxy._pyroHandshake = handshake
    return proxy


def test_device_daemon_missing_wrong_right(secured, make_plain_server):
    uri = secured.uri("dev")
    with pytest.raises(Pyro5.errors.CommunicationError, match="authentication failed"):
        plain(uri).echo(1)
    with pytest.raises(Pyro5.errors.CommunicationError, match="authentication failed"):
        plain(uri, "wrong").echo(1)
    # The token sent as plain text is refused by default, with a message saying so ...
    with pytest.raises(Pyro5.errors.CommunicationError, match="accept_plain_token"):
        plain(uri, TOKEN).echo(1)
    # ... and taken by a server that allows it: the one line a plain Pyro5 user adds.
    lenient = make_plain_server()
    assert plain(lenient.uri("dev"), TOKEN).echo(1) == 1
    with pytest.raises(Pyro5.errors.CommunicationError, match="authentication failed"):
        plain(lenient.uri("dev"), "wrong").echo(1)
    pyroinst.set_token(TOKEN)
    assert Pyro5.api.Proxy(uri).echo(2) == 2  # a proxy in a pyroinst process proves it


@pytest.fixture
def make_plain_server(ns):
    servers = []

    def make():
        server = InstServer(ns_host=ns.host, ns_port=ns.port, token=TOKEN, accept_plain_token=True)
        server.add_device(Echo(), "lenient")
        servers.append(server.start())
        server.uri = lambda _name: server._servants["lenient"]._uri
        return server

    yield make
    for server in servers:
        server.stop()


def test_connect_and_handles_carry_the_token(secured, ns):
    pyroinst.set_token(TOKEN)
    dev = pyroinst.connect("dev", ns.host, ns.port)
    job = dev.big(10)
    assert job.result(10).shape == (10,)
    pyroinst.set_token("wrong")
    pyroinst.client.release_cached_proxies()
    with pytest.raises(pyroinst.AuthenticationFailed, match="authentication failed"):
        job.status()  # the handle's new connection presents the wrong token
    with pytest.raises(pyroinst.AuthenticationFailed):
        pyroinst.connect("dev", ns.host, ns.port).echo(1)
    pyroinst.set_token(None)
    pyroinst.client.release_cached_proxies()
    with pytest.raises(pyroinst.AuthenticationFailed):
        job.status()  # and without any token
    with pytest.raises(pyroinst.AuthenticationFailed):
        pyroinst.connect("dev", ns.host, ns.port).echo(1)
    pyroinst.set_token(TOKEN)
    assert pyroinst.connect("dev", ns.host, ns.port).echo(2) == 2  # still serving


def test_name_server_refuses_without_token():
    with EmbeddedNameServer("127.0.0.1", 0, token=TOKEN) as secured_ns:
        uri = f"PYRO:Pyro.NameServer@127.0.0.1:{secured_ns.port}"
        for handshake in (None, "wrong"):
            for method, args in (
                ("lookup", ("Pyro.NameServer",)),
                ("list", ()),
                ("register", ("x", "PYRO:x@127.0.0.1:1")),
                ("remove", ("Pyro.NameServer",)),
            ):
                nsp = plain(uri, handshake)
                with pytest.raises(Pyro5.errors.CommunicationError, match="authentication failed"):
                    getattr(nsp, method)(*args)
        with pytest.raises(pyroinst.AuthenticationFailed):
            pyroinst.locate_ns("127.0.0.1", secured_ns.port)
        with pytest.raises(Pyro5.errors.CommunicationError, match="accept_plain_token"):
            plain(uri, TOKEN).list()
        # a server with the token registers; a client with it finds the device
        server = InstServer(ns_host="127.0.0.1", ns_port=secured_ns.port, token=TOKEN)
        server.add_device(Echo(), "dev")
        with server:
            pyroinst.set_token(TOKEN)
            assert pyroinst.connect("dev", "127.0.0.1", secured_ns.port).echo(3) == 3
            assert Pyro5.api.Proxy(f"PYRONAME:dev@127.0.0.1:{secured_ns.port}").echo(4) == 4
    with EmbeddedNameServer("127.0.0.1", 0, token=TOKEN, accept_plain_token=True) as lenient:
        uri = f"PYRO:Pyro.NameServer@127.0.0.1:{lenient.port}"
        assert "Pyro.NameServer" in plain(uri, TOKEN).list()


def test_cli_token_file(secured, ns, tmp_path):
    runner = CliRunner()
    pyroinst.set_token(None)
    base = ["--ns-host", ns.host, "--ns-port", str(ns.port)]
    result = runner.invoke(app, [*base, "call", "dev", "echo", "1"])
    assert result.exit_code == 4 and "authentication failed" in result.stderr
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    result = runner.invoke(
        app, [*base, "--token-file", str(token_file), "call", "dev", "echo", "1"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "1"
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-lab-token")
    result = runner.invoke(
        app, [*base, "--token-file", str(wrong_file), "call", "dev", "echo", "1"]
    )
    assert result.exit_code == 4 and "authentication failed" in result.stderr
    assert "not-the-lab-token" not in result.output
    result = runner.invoke(app, [*base, "--token-file", str(tmp_path / "none"), "list"])
    assert result.exit_code == 2 and "token file" in result.stderr

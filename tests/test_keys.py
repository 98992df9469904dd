"""People's own keys: who did it, proven; revoked keys refused; weak tokens named; bad input
(unknown key names, truncated TLS, unreadable certificates) refused while the server serves."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time

import pytest
from Pyro5 import protocol
from typer.testing import CliRunner

import pyroinst
from pyroinst import EmbeddedNameServer, InstServer, identity
from pyroinst.cli import app
from pyroinst.errors import ConfigurationError
from pyroinst.keys import parse_token, read_key_file, weakness
from tests.authwire import RawClient
from tests.helpers import Echo, lab_token, wait_until

runner = CliRunner()


def new_key(name: str, key_file) -> str:
    result = runner.invoke(app, ["token", "new", "--name", name, "--key-file", str(key_file)])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@pytest.fixture
def keyed_lab(tmp_path):
    """A name server and a device server sharing a key file of alice, bob and the servers'
    own key; an audit log."""
    key_file = tmp_path / "keys"
    tokens = {name: new_key(name, key_file) for name in ("server", "alice", "bob")}
    audit = tmp_path / "audit.jsonl"

    def start():
        ns = EmbeddedNameServer("127.0.0.1", 0, token_file=str(key_file)).start()
        server = InstServer(
            ns_host=ns.host,
            ns_port=ns.port,
            token_file=str(key_file),
            audit_log=str(audit),
            heartbeat=0,
            handshake_timeout=1.0,
        )
        server.add_device(Echo(), "dev")
        return ns, server.start()

    ns, server = start()
    state = {"ns": ns, "server": server, "tokens": tokens, "file": key_file, "audit": audit}

    def restart():
        state["server"].stop()
        state["ns"].stop()
        state["ns"], state["server"] = start()

    state["restart"] = restart
    yield state
    state["server"].stop()
    state["ns"].stop()
    pyroinst.client.release_cached_proxies()


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_call_is_logged_with_the_key_that_proved_it(keyed_lab):
    ns = keyed_lab["ns"]
    for person in ("alice", "bob"):
        with lab_token(keyed_lab["tokens"][person]):
            dev = pyroinst.connect("dev", ns.host, ns.port, owner="carol")  # owner: asserted
            assert dev.echo(person) == person
            dev._pyroRelease()
    logged = [(r["args"], r["user"], r["owner"]) for r in records(keyed_lab["audit"])]
    assert (["alice"], "alice", "carol") in logged
    assert (["bob"], "bob", "carol") in logged


def test_a_reservation_defaults_to_the_proven_name(keyed_lab):
    ns = keyed_lab["ns"]
    with lab_token(keyed_lab["tokens"]["alice"]):
        dev = pyroinst.connect("dev", ns.host, ns.port)
        granted = dev.reserve(lease_s=30)
        assert granted["owner"] == "alice"
        assert dev.echo(1) == 1
        assert dev.release() is True
        dev._pyroRelease()


def test_a_revoked_key_is_refused_after_a_restart(keyed_lab):
    key_file = keyed_lab["file"]
    lines = [line for line in key_file.read_text().splitlines() if not line.startswith("bob@")]
    key_file.write_text("\n".join(lines) + "\n")
    keyed_lab["restart"]()
    ns = keyed_lab["ns"]
    with lab_token(keyed_lab["tokens"]["bob"]):
        with pytest.raises(pyroinst.AuthenticationFailed, match="no key named 'bob'"):
            pyroinst.connect("dev", ns.host, ns.port).echo(1)
    with lab_token(keyed_lab["tokens"]["alice"]):
        assert pyroinst.connect("dev", ns.host, ns.port).echo(2) == 2


def _where(server: InstServer) -> tuple[str, int]:
    host, port = server.location.rsplit(":", 1)
    return host, int(port)


def test_an_unknown_key_name_gets_a_clear_refusal(keyed_lab):
    raw = RawClient(_where(keyed_lab["server"]))
    try:
        kind, answer = raw.hello(key_name="mallory")
        assert kind == protocol.MSG_CONNECTFAIL
        assert "no key named 'mallory'" in answer
    finally:
        raw.close()
    raw = RawClient(_where(keyed_lab["server"]))
    try:
        kind, answer = raw.hello(key_name="x" * 5000 + "\n\x1b[2J")  # a huge, hostile name
        assert kind == protocol.MSG_CONNECTFAIL
        assert len(answer) < 600 and "\x1b" not in answer
    finally:
        raw.close()
    ns = keyed_lab["ns"]
    with lab_token(keyed_lab["tokens"]["alice"]):
        assert pyroinst.connect("dev", ns.host, ns.port).echo("serving") == "serving"


def test_a_truncated_tls_hello_is_closed_and_the_server_serves(keyed_lab):
    server = keyed_lab["server"]
    for shut in (True, False):  # cut short and closed; cut short and left hanging
        started = time.monotonic()
        with socket.create_connection(_where(server), timeout=15) as sock:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a hello cut short
            if shut:
                sock.shutdown(socket.SHUT_WR)
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(4096):
                    answer += chunk  # at most a TLS alert; then the server closes
        assert b"PYRO" not in answer
        assert time.monotonic() - started < 1 + 2  # the handshake deadline, at most
    ns = keyed_lab["ns"]
    with lab_token(keyed_lab["tokens"]["alice"]):
        assert pyroinst.connect("dev", ns.host, ns.port).echo("serving") == "serving"


def test_the_audit_table_escapes_control_characters(keyed_lab, tmp_path):
    ns = keyed_lab["ns"]
    with lab_token(keyed_lab["tokens"]["alice"]):
        dev = pyroinst.connect("dev", ns.host, ns.port, owner="eve\n2026-01-01 forged row")
        dev.echo("x")
        dev._pyroRelease()
    result = runner.invoke(app, ["audit", str(keyed_lab["audit"])])
    assert result.exit_code == 0, result.output
    forged = [line for line in result.stdout.splitlines() if line.startswith("2026-01-01")]
    assert not forged, result.stdout
    assert "eve\\n2026-01-01 forged row" in result.stdout


# -- keys and tokens ------------------------------------------------------------------------
def test_key_files(tmp_path):
    single = tmp_path / "single"
    single.write_text("a-shared-lab-token-of-some-length\n")
    ring = read_key_file(single)
    assert list(ring.keys) == ["lab"] and ring.own_token() == "a-shared-lab-token-of-some-length"
    named = tmp_path / "named"
    alice = new_key("alice", named)
    ring = read_key_file(named)
    assert ring.get("alice").token() == alice and parse_token(alice).name == "alice"
    assert ring.own_token() == alice  # the file's only key
    new_key("bob", named)
    assert read_key_file(named).own is None  # two keys, none named server
    with pytest.raises(ConfigurationError, match="no server|none named 'server'"):
        InstServer(ns_host="127.0.0.1", ns_port=9, token_file=str(named), embed_ns=False)
    mixed = tmp_path / "mixed"
    mixed.write_text("a@one = " + "s" * 20 + "\nb@two = " + "t" * 20 + "\n")
    with pytest.raises(ConfigurationError, match="mixes lab ids"):
        read_key_file(mixed)
    broken = tmp_path / "broken"
    broken.write_text("alice = short = thing\nno equals sign here at all\n")
    with pytest.raises(ConfigurationError, match="line 1"):
        read_key_file(broken)
    assert oct(os.stat(named).st_mode & 0o777) == "0o600"


def test_token_new_makes_strong_tokens_and_names_weak_ones(tmp_path, caplog):
    shared = runner.invoke(app, ["token", "new"]).stdout.strip()
    assert len(shared) >= 43 and weakness(shared) is None
    assert weakness("spectrometer") and weakness("short")
    assert weakness("Spectrometer1") == "it is a common word" or weakness("Spectrometer1")
    with caplog.at_level(logging.WARNING, logger="pyroinst.keys"):
        with EmbeddedNameServer("127.0.0.1", 0, token="spectrometer"):
            pass
    assert any("weak" in r.getMessage() for r in caplog.records)
    again = runner.invoke(app, ["token", "new", "--name", "bad name"])
    assert again.exit_code == 2 and "letters, digits" in again.stderr


def test_an_unreadable_identity_is_replaced_and_a_configured_one_is_named(tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    (state / "identity.pem").write_text("not a certificate")
    monkeypatch.setenv("PYROINST_STATE_DIR", str(state))
    made = identity.server_identity()
    assert made.where == str(state / "identity.pem")
    assert b"BEGIN CERTIFICATE" in (state / "identity.pem").read_bytes()
    with pytest.raises(ConfigurationError, match="cannot be read"):
        identity.identity_from_files(str(tmp_path / "missing.pem"))
    (tmp_path / "bad.pem").write_text("garbage")
    with pytest.raises(ConfigurationError, match="bad.pem"):
        identity.identity_from_files(str(tmp_path / "bad.pem"))


def test_a_server_started_with_a_broken_identity_serves(tmp_path, monkeypatch):
    state = tmp_path / "state2"
    state.mkdir()
    (state / "identity.pem").write_bytes(b"\x00" * 100)
    monkeypatch.setenv("PYROINST_STATE_DIR", str(state))
    token = "an-identity-test-token-0123456789"
    with lab_token(token), EmbeddedNameServer("127.0.0.1", 0, token=token) as ns:
        server = InstServer(ns_host=ns.host, ns_port=ns.port, token=token, heartbeat=0)
        server.add_device(Echo(), "dev")
        server.start()
        try:
            deadline = time.monotonic() + 10
            wait_until(lambda: pyroinst.connect("dev", ns.host, ns.port).echo(1) == 1, timeout=10)
            assert time.monotonic() < deadline
        finally:
            server.stop()

"""The token protocol on the wire: never sent, not replayable, servers prove themselves."""

from __future__ import annotations

import base64
import logging

import Pyro5.api
import Pyro5.errors
import Pyro5.server
import pytest
from Pyro5 import protocol

import pyroinst
from pyroinst import EmbeddedNameServer, InstServer
from pyroinst.auth import PROOF_ANNOTATION
from tests.authwire import (
    SERPENT,
    RawClient,
    RecordingRelay,
    connect_message,
    decoded,
    exchange,
    message,
    parse,
)
from tests.helpers import Echo, lab_token

TOKEN = "hAndshake-t0ken-for-the-lab-2026"
OTHER = "another-lab-entirely"


@pytest.fixture(autouse=True)
def _token():
    with lab_token(TOKEN):
        yield


@pytest.fixture(scope="module")
def lab():
    """Two device servers with the lab's token, each serving a device "a" (each with its own
    name server): a recording made at one can be replayed to the other."""
    with (
        EmbeddedNameServer("127.0.0.1", 0, token=TOKEN) as ns,
        EmbeddedNameServer("127.0.0.1", 0, token=TOKEN) as ns2,
    ):
        servers, devices = [], []
        for where in (ns, ns2):
            server = InstServer(
                ns_host=where.host,
                ns_port=where.port,
                token=TOKEN,
                heartbeat=0,
                handshake_timeout=1.0,
            )
            device = Echo()
            server.add_device(device, "a")
            servers.append(server.start())
            devices.append(device)
        yield ns, servers, devices
        for server in servers:
            server.stop()


def address(server: InstServer) -> tuple[str, int]:
    host, port = server.location.rsplit(":", 1)
    return host, int(port)


def encodings(secret: str) -> list[bytes]:
    raw = secret.encode()
    found = [raw, raw.hex().encode(), raw.hex().upper().encode()]
    for offset in range(3):  # base64 of the token wherever it starts in a longer text
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw)
            found.append(text[(offset * 4 + 2) // 3 + 1 : -4])
    return found


def test_the_token_never_crosses_and_a_recording_is_worthless(lab):
    ns, (a, b), (dev_a, dev_b) = lab
    relay = RecordingRelay(address(a))
    try:
        proxy = Pyro5.api.Proxy(f"PYRO:a@127.0.0.1:{relay.port}")
        assert proxy.echo("through the relay") == "through the relay"  # forwarders work
        proxy.store("recorded call")
        proxy._pyroRelease()
        assert dev_a.stored == "recorded call"
        recording = bytes(relay.sessions[0]["up"])
        for encoded in encodings(TOKEN):
            assert encoded not in relay.uploaded and encoded not in relay.downloaded
    finally:
        relay.close()
    dev_a.stored = dev_b.stored = None
    # Replayed to the same server or another: TLS keys are new for every connection, so
    # the recording does not even decrypt; nothing but a closed connection comes back.
    assert recording[:1] == b"\x16", "the conversation ran TLS"
    for server, name in ((a, "a"), (b, "b")):
        answer = exchange(address(server), recording)
        replies = parse(answer)
        types = [r[0] for r in replies]
        assert protocol.MSG_RESULT not in types and protocol.MSG_PING not in types, (name, types)
        assert b"PYRO" not in answer
    assert dev_a.stored is None and dev_b.stored is None  # the recorded call never ran again
    assert pyroinst.connect("a", ns.host, ns.port).echo(1) == 1  # both still serve
    assert Pyro5.api.Proxy(b.uri("a")).echo(2) == 2


class _Impostor:
    calls = 0

    @Pyro5.server.expose
    def echo(self, value):
        _Impostor.calls += 1
        return value


class _RecordingDaemon(Pyro5.server.Daemon):
    handshakes: list = []

    def validateHandshake(self, conn, data):  # noqa: N802
        self.handshakes.append(data)
        return "hello"


def test_a_plain_pyro5_daemon_never_gets_the_token():
    daemon = _RecordingDaemon(host="127.0.0.1", port=0)
    uri = daemon.register(_Impostor(), "dev")
    import threading

    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    relay = RecordingRelay((uri.host, uri.port))
    try:
        for proxy in (
            pyroinst.DeviceProxy(f"PYRO:dev@127.0.0.1:{relay.port}"),
            Pyro5.api.Proxy(f"PYRO:dev@127.0.0.1:{relay.port}"),
        ):
            with pytest.raises(pyroinst.AuthenticationFailed, match="could not prove it belongs"):
                proxy.echo("secret data")
            proxy._pyroRelease()
        assert _Impostor.calls == 0  # no call was sent to it
        # It saw a TLS hello, not even a handshake: a client with a token starts TLS.
        assert not _RecordingDaemon.handshakes
        assert relay.uploaded[:1] == b"\x16"
        for encoded in encodings(TOKEN):
            assert encoded not in relay.uploaded
        # Outside the lab on purpose: a proxy may opt out and talk plain Pyro5.
        outside = pyroinst.auth.outside_lab(Pyro5.api.Proxy(uri))
        assert outside.echo(5) == 5
        outside._pyroRelease()
    finally:
        relay.close()
        daemon.shutdown()
        thread.join(5)
        daemon.close()


def test_a_server_with_another_token_or_none(lab):
    ns, (a, _), _ = lab
    pyroinst.set_token(OTHER)
    with pytest.raises(pyroinst.AuthenticationFailed, match="authentication failed"):
        Pyro5.api.Proxy(a.uri("a")).echo(1)
    pyroinst.set_token(None)
    open_ns = EmbeddedNameServer("127.0.0.1", 0)  # no token at all
    pyroinst.set_token(TOKEN)
    with open_ns:
        with pytest.raises(pyroinst.AuthenticationFailed, match="without a token"):
            pyroinst.locate_ns(open_ns.host, open_ns.port)


BAD_HANDSHAKES = {
    "a number": 12345,
    "no nonce": {"pyroinst_auth": 1},
    "a short nonce": {"pyroinst_auth": 1, "nonce": "abcd"},
    "a nonce that is not hex": {"pyroinst_auth": 1, "nonce": "zz" * 32},
    "a nonce of the wrong type": {"pyroinst_auth": 1, "nonce": 2**255},
    "another version": {"pyroinst_auth": 2, "nonce": "00" * 32},
    "extra keys": {"pyroinst_auth": 1, "nonce": "11" * 32, "token": "x"},
    "a list": ["pyroinst_auth", 1],
    "nothing": None,
}


@pytest.mark.parametrize("index, what", list(enumerate(sorted(BAD_HANDSHAKES))))
def test_malformed_handshakes_are_refused(lab, index, what):
    _, (a, _), _ = lab
    source = f"127.0.1.{index + 1}"  # one address each: no slow-down between the cases
    replies = parse(exchange(address(a), connect_message(BAD_HANDSHAKES[what], "a"), source))
    assert [r[0] for r in replies] == [protocol.MSG_CONNECTFAIL], what
    assert "authentication failed" in decoded(replies[0])
    assert Pyro5.api.Proxy(a.uri("a")).echo(what) == what


def test_protocol_violations_after_the_challenge(lab):
    _, (a, _), (dev_a, _) = lab
    where = address(a)
    source = "127.0.0.8"

    # The same nonce twice: the second handshake is a replay.
    first = RawClient(where, source)
    assert first.hello("a")[0] == protocol.MSG_CONNECTOK
    second = RawClient(where, source)
    second.client_nonce = first.client_nonce
    kind, answer = second.hello("a")
    assert kind == protocol.MSG_CONNECTFAIL and "authentication failed" in answer
    first.close(), second.close()

    # A call before the proof (with the proof on it): refused, nothing runs.
    dev_a.stored = None
    raw = RawClient(where, source)
    _, answer = raw.hello("a")
    call = SERPENT.dumpsCall("a", "store", ("before the proof",), {})
    raw.conn.send(message(protocol.MSG_INVOKE, call, {PROOF_ANNOTATION: b"x" * 32}))
    assert raw.receive()[0] == protocol.MSG_CONNECTFAIL
    assert raw.closed(2.0) and dev_a.stored is None

    # No proof, a wrong proof (another token), an oversized first message.
    for attempt in ("none", "wrong", "huge"):
        raw = RawClient(where, source)
        _, answer = raw.hello("a")
        if attempt == "none":
            raw.conn.send(message(protocol.MSG_PING, b""))
            assert raw.receive()[0] == protocol.MSG_CONNECTFAIL
        elif attempt == "wrong":
            kind, _, payload = raw.prove(OTHER, answer["handshake"]["nonce"])
            assert kind == protocol.MSG_CONNECTFAIL and "authentication" in payload
        else:
            raw.conn.send(message(protocol.MSG_PING, b"x" * 100_000))
        assert raw.closed(5.0), attempt

    # A truncated proof: the connection is closed after the handshake deadline (1 s here).
    raw = RawClient(where, source)
    _, answer = raw.hello("a")
    raw.conn.send(message(protocol.MSG_PING, b"")[:10])
    assert raw.closed(5.0)

    # The proof twice: the second one ends the connection, with a clear error.
    raw = RawClient(where, source)
    raw.authenticate(TOKEN, "a")
    call = SERPENT.dumpsCall("a", "echo", ("again",), {})
    raw.conn.send(message(protocol.MSG_INVOKE, call, {PROOF_ANNOTATION: b"y" * 32}, seq=1))
    reply = raw.receive()
    assert reply[0] == protocol.MSG_RESULT and reply[1] & protocol.FLAGS_EXCEPTION
    assert "already proved" in str(decoded(reply))
    assert raw.closed(5.0)

    # A correct one works from that address too, and the server still serves.
    raw = RawClient(where, source)
    raw.authenticate(TOKEN, "a")
    raw.conn.send(message(protocol.MSG_INVOKE, SERPENT.dumpsCall("a", "echo", (7,), {}), seq=1))
    reply = raw.receive()
    assert reply[0] == protocol.MSG_RESULT and not reply[1] & protocol.FLAGS_EXCEPTION
    assert decoded(reply) == 7
    raw.close()
    assert Pyro5.api.Proxy(a.uri("a")).echo("serving") == "serving"


def test_plain_tokens_off_and_on(lab, caplog):
    ns, (a, _), _ = lab
    plain = Pyro5.api.Proxy(a.uri("a"))
    plain._pyroHandshake = TOKEN  # what a script without pyroinst does
    with pytest.raises(Pyro5.errors.CommunicationError, match="accept_plain_token"):
        plain.echo(1)
    lenient = InstServer(
        ns_host=ns.host, ns_port=ns.port, token=TOKEN, accept_plain_token=True, heartbeat=0
    )
    lenient.add_device(Echo(), "lenient")
    with lenient, caplog.at_level(logging.WARNING, logger="pyroinst.auth"):
        for _ in range(3):
            plain = Pyro5.api.Proxy(lenient.uri("lenient"))
            plain._pyroHandshake = TOKEN
            assert plain.echo(2) == 2
            plain._pyroRelease()
        reply = exchange(
            address(lenient), connect_message(TOKEN, "lenient"), "127.0.0.9", replies=1
        )
        replies = parse(reply)
        assert replies[0][0] == protocol.MSG_CONNECTOK
        accepted = [r.getMessage() for r in caplog.records if "plain text" in r.getMessage()]
        assert len(accepted) == 2, accepted  # once per client address
        assert "127.0.0.1" in accepted[0] and "127.0.0.9" in accepted[1]
        wrong = Pyro5.api.Proxy(lenient.uri("lenient"))
        wrong._pyroHandshake = "not the token"
        with pytest.raises(Pyro5.errors.CommunicationError, match="authentication failed"):
            wrong.echo(3)
        # pyroinst clients still prove the token there.
        assert Pyro5.api.Proxy(lenient.uri("lenient")).echo(4) == 4

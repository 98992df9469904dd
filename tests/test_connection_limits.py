"""Connections that hold on, or guess: the lab keeps working (one lab per module)."""

from __future__ import annotations

import logging
import socket
import threading

import Pyro5.api
import Pyro5.errors
import pytest
from Pyro5 import config as pyro_config
from Pyro5 import protocol

import pyroinst
from pyroinst import EmbeddedNameServer, InstServer
from pyroinst.admission import FailureTracker
from tests.authwire import RawClient
from tests.helpers import Echo, lab_token, wait_until

TOKEN = "limits-token-0123456789abcdef"
FLOOD = 300


@pytest.fixture(autouse=True)
def _token():
    with lab_token(TOKEN):
        yield


@pytest.fixture(scope="module")
def lab():
    with lab_token(TOKEN), EmbeddedNameServer("127.0.0.1", 0, token=TOKEN) as ns:
        server = InstServer(
            ns_host=ns.host, ns_port=ns.port, token=TOKEN, heartbeat=0, handshake_timeout=1.0
        )
        server.add_device(Echo(), "dev")
        tight = InstServer(
            ns_host=ns.host, ns_port=ns.port, token=TOKEN, heartbeat=0, max_connections_per_host=3
        )
        tight.add_device(Echo(), "tight")
        with server, tight:
            yield ns, server, tight


def where(server: InstServer) -> tuple[str, int]:
    host, port = server.location.rsplit(":", 1)
    return host, int(port)


def is_closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def keep_calling(ns, server: InstServer, rounds: int = 20) -> int:
    """Calls over a kept connection and over fresh ones; each must be answered."""
    dev = pyroinst.connect("dev", ns.host, ns.port)
    answered = 0
    for i in range(rounds):
        assert dev.echo(i) == i
        fresh = Pyro5.api.Proxy(server.uri("dev"))
        assert fresh.echo(-i) == -i
        fresh._pyroRelease()
        answered += 1
    return answered


def settled(baseline: int):
    return lambda: threading.active_count() <= baseline


def test_idle_connections_are_closed_and_starve_no_one(lab):
    ns, server, _ = lab
    assert keep_calling(ns, server, 2) == 2
    baseline = threading.active_count()
    idle = [
        socket.create_connection(where(server), source_address=("127.0.0.2", 0))
        for _ in range(FLOOD)
    ]
    try:
        assert keep_calling(ns, server) == 20  # while 300 sockets sit there
        # Refused ones at once, admitted ones after the handshake deadline (1 s here).
        wait_until(lambda: all(is_closed(s) for s in idle), timeout=20, interval=0.1)
    finally:
        for sock in idle:
            sock.close()
    assert keep_calling(ns, server, 2) == 2
    wait_until(settled(baseline), timeout=20, interval=0.1)


def test_authenticated_idle_connections_are_limited_per_address(lab):
    ns, server, _ = lab
    assert keep_calling(ns, server, 2) == 2
    baseline = threading.active_count()
    held, refusals = [], []
    try:
        for _ in range(FLOOD):
            raw = RawClient(where(server), "127.0.0.2")
            kind, answer = raw.hello()
            if kind == protocol.MSG_CONNECTOK:
                reply = raw.prove(TOKEN, answer["handshake"]["nonce"])
                assert reply[0] == protocol.MSG_PING
                held.append(raw)
            else:
                refusals.append(answer)
                raw.close()
        assert len(held) == 64  # the default max_connections_per_host
        assert len(refusals) == FLOOD - 64
        assert "max_connections_per_host" in refusals[0] and "127.0.0.2" in refusals[0]
        assert keep_calling(ns, server) == 20  # other addresses are served as before
    finally:
        for raw in held:
            raw.close()
    assert keep_calling(ns, server, 2) == 2
    wait_until(settled(baseline), timeout=20, interval=0.1)


def test_a_busy_address_gets_a_clear_server_busy(lab):
    ns, _, tight = lab
    held = []
    try:
        for _ in range(3):
            raw = RawClient(where(tight), "127.0.0.1")
            raw.authenticate(TOKEN, "tight")
            held.append(raw)
        with pytest.raises(pyroinst.ServerBusy, match="max_connections_per_host") as info:
            pyroinst.connect("tight", ns.host, ns.port).echo(1)
        assert "127.0.0.1" in str(info.value)
        plain = Pyro5.api.Proxy(tight.uri("tight"))
        with pytest.raises(Pyro5.errors.CommunicationError, match="rejected: server busy"):
            plain.echo(1)
    finally:
        for raw in held:
            raw.close()
    pyroinst.client.release_cached_proxies()

    def serves():
        try:
            return Pyro5.api.Proxy(tight.uri("tight")).echo(2) == 2
        except Pyro5.errors.CommunicationError:
            return False

    wait_until(serves, timeout=10, interval=0.05)


def test_one_address_cannot_take_the_reserve(lab, monkeypatch):
    ns, server, _ = lab
    assert keep_calling(ns, server, 1) == 1
    monkeypatch.setattr(pyro_config, "THREADPOOL_SIZE", 24)  # reserve: 4 workers
    held, refusal = [], None
    try:
        for _ in range(30):
            raw = RawClient(where(server), "127.0.0.2")
            kind, answer = raw.hello()
            if kind != protocol.MSG_CONNECTOK:
                refusal = answer
                raw.close()
                break
            raw.prove(TOKEN, answer["handshake"]["nonce"])
            held.append(raw)
        assert refusal is not None and "reserve" in refusal, refusal
        assert len(held) < 24 - 4 + 1
        # The reserve is there for an address holding few connections.
        fresh = Pyro5.api.Proxy(server.uri("dev"))
        assert fresh.echo("reserve") == "reserve"
        fresh._pyroRelease()
    finally:
        for raw in held:
            raw.close()


def test_wrong_guesses_are_slowed_and_summarised(lab, caplog):
    ns, server, _ = lab
    guesses_done = []

    def guess(n: int) -> None:
        for _ in range(n):
            raw = RawClient(where(server), "127.0.0.3", timeout=30)
            _, answer = raw.hello()
            kind, _, payload = raw.prove("a wrong guess", answer["handshake"]["nonce"])
            assert kind == protocol.MSG_CONNECTFAIL and "authentication failed" in payload
            raw.close()
            guesses_done.append(1)

    with caplog.at_level(logging.WARNING, logger="pyroinst.admission"):
        guessers = [threading.Thread(target=guess, args=(4,)) for _ in range(2)]
        for thread in guessers:
            thread.start()
        answered = 0
        while any(t.is_alive() for t in guessers):
            answered += keep_calling(ns, server, 1)  # never waits for the guesser's delays
        for thread in guessers:
            thread.join()
    assert len(guesses_done) == 8 and answered >= 1
    failures = server._daemon._pyroinst_auth.failures
    assert failures.count("127.0.0.3") == 8 and failures.count("127.0.0.1") == 0
    lines = [r.getMessage() for r in caplog.records if "127.0.0.3" in r.getMessage()]
    assert len(lines) == 1, lines  # one warning per address and minute, not one per try
    with caplog.at_level(logging.WARNING, logger="pyroinst.admission"):
        failures.summary.flush(force=True)
    assert any("7 more" in r.getMessage() for r in caplog.records)


def test_failure_delays_grow_queue_and_stay_per_address():
    tracker = FailureTracker()
    delays = [tracker.failed("10.0.0.9", "wrong proof") for _ in range(8)]
    assert delays[:3] == [0, 0, 0]  # a typo or two costs nothing
    assert all(b > a for a, b in zip(delays[3:], delays[4:], strict=False))  # queued, growing
    assert delays[-1] - delays[-2] == pytest.approx(1.0, abs=0.05)  # at most one a second
    assert tracker.failed("10.0.0.10", "wrong proof") == 0  # another address: not slowed
    tracker.succeeded("10.0.0.9")
    assert tracker.failed("10.0.0.9", "a typo") == 0


def test_a_partial_handshake_is_closed_at_the_deadline(lab):
    ns, server, _ = lab
    raw = RawClient(where(server), "127.0.0.4")
    raw.conn.send(b"PYRO")  # then nothing
    assert raw.closed(5.0)
    assert keep_calling(ns, server, 1) == 1

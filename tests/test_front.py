"""The front of a device server (pyroinst.front): one thread answers the small requests of
idle connections; what would hold it (a slow call, a large or slow message, TLS) does not."""

from __future__ import annotations

import logging
import socket
import threading

import numpy as np
import Pyro5.api
import pytest
from Pyro5 import protocol, serializers

import pyroinst
from pyroinst import front as front_module
from tests.helpers import counted_nap, in_threads, lab_token, wait_until


class Gate:
    """A call that waits, server side, until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.inside = threading.Event()

    def wait_gate(self) -> bool:
        """Wait (at most 30 s) until the gate opens; True if it did."""
        self.inside.set()
        return self.gate.wait(30)

    def square(self, value: int) -> int:
        """``value`` squared."""
        return value * value


class Numbers:
    """Small, fast calls and an upload."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self._lock = threading.Lock()

    def square(self, value: int) -> int:
        """``value`` squared."""
        return value * value

    def total(self, a: np.ndarray) -> float:
        """The sum of an uploaded array."""
        return float(a.sum())

    @pyroinst.job
    def count_to(self, n: int) -> int:
        """A job: ``n``."""
        return n

    @pyroinst.concurrent
    def nap(self, value: int, seconds: float) -> int:
        """``value``, after ``seconds`` (several at once: no device lock)."""
        counted_nap(self, seconds)
        return value


@pytest.fixture(scope="module")
def lab():
    ns = pyroinst.EmbeddedNameServer("127.0.0.1", 0).start()
    server = pyroinst.InstServer(host="127.0.0.1", port=0, ns_host=ns.host, ns_port=ns.port)
    gate = Gate()
    server.add_device(gate, "gate")
    numbers = Numbers()
    server.add_device(numbers, "numbers")
    server.start()
    yield ns, server, gate, numbers
    gate.gate.set()
    server.stop()
    ns.stop()


def front_of(server) -> front_module.Front:
    front = server._daemon.transportServer.front
    assert front is not None
    return front


def proxy(lab, name: str) -> Pyro5.api.Proxy:
    ns = lab[0]
    return Pyro5.api.Proxy(f"PYRONAME:{name}@{ns.host}:{ns.port}")


def test_many_clients_at_once_are_answered_by_the_front(lab):
    front = front_of(lab[1])
    before = front.answered

    def work(k: int) -> list[int]:
        with proxy(lab, "numbers") as p:
            return [p.square(k * 1000 + i) for i in range(100)]

    results = in_threads(8, work)
    for k in range(8):
        assert results[k] == [(k * 1000 + i) ** 2 for i in range(100)]
    # (counted after each reply is sent: the last count may come just after its reply)
    wait_until(lambda: front.answered - before >= 800, timeout=10)


def test_a_slow_call_does_not_hold_the_other_clients(lab):
    _, server, gate, _ = lab
    front = front_of(server)
    handed_before = front.handed_on
    slow = proxy(lab, "gate")
    outcome: list[object] = []

    def wait() -> None:
        slow._pyroClaimOwnership()
        outcome.append(slow.wait_gate())

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        assert gate.inside.wait(10)
        # The slow call runs; the front passes on and answers everyone else meanwhile.
        with proxy(lab, "numbers") as fast:
            fast._pyroTimeout = 5  # far beyond the front's patience (5 ms)
            assert [fast.square(i) for i in range(20)] == [i * i for i in range(20)]
        assert waiter.is_alive() and not gate.gate.is_set()
        assert front.handed_on > handed_before
    finally:
        gate.gate.set()
        waiter.join(30)
    assert outcome == [True]
    # The slow call's connection is served on by the thread that ran it.
    slow._pyroClaimOwnership()
    assert slow.square(5) == 25
    slow._pyroRelease()
    gate.gate.clear()
    gate.inside.clear()


def test_many_slow_and_fast_calls_at_once_pass_the_role_on_and_lose_nothing(lab):
    # Slow calls (20 ms, over the front's 5 ms patience) and fast ones, from 8 clients:
    # the role passes on many times, each thread keeps the connection it was serving.
    front = front_of(lab[1])
    handed_before = front.handed_on

    def work(k: int) -> list[int]:
        with proxy(lab, "numbers") as p:
            got = []
            for i in range(6):
                got.append(p.nap(k * 100 + i, 0.02 if (i + k) % 2 else 0.0))
                got.append(p.square(i))
            return got

    results = in_threads(8, work)
    for k in range(8):
        assert results[k] == [x for i in range(6) for x in (k * 100 + i, i * i)]
    assert front.handed_on > handed_before
    with proxy(lab, "numbers") as p:  # a new client: some thread leads the front
        p._pyroTimeout = 5
        assert p.square(12) == 144


def test_calls_that_wait_a_little_run_at_once_for_several_clients(lab):
    # 3 ms each (an instrument's query): under the front's patience, but answered one
    # after the other they would serialise every client. After a few, each connection
    # has a worker of its own and the calls overlap again.
    numbers = lab[3]
    numbers.most = 0
    start = threading.Barrier(4)

    def work(k: int) -> list[int]:
        with proxy(lab, "numbers") as p:
            start.wait(10)
            return [p.nap(k * 100 + i, 0.003) for i in range(15)]

    results = in_threads(4, work)
    assert results == {k: [k * 100 + i for i in range(15)] for k in range(4)}
    assert numbers.most >= 2


def test_a_connection_that_starts_or_awaits_jobs_gets_a_worker(lab):
    # The job's thread and the front's would take turns on the interpreter lock.
    front = front_of(lab[1])
    with proxy(lab, "numbers") as p:
        assert p.square(3) == 9
        in_front = front.count
        job = p.count_to(5)
        wait_until(lambda: front.count == in_front - 1, timeout=10)
        assert job.result(timeout=10) == 5  # (the handle's own connection: a worker too)
        assert [p.square(i) for i in range(3)] == [0, 1, 4]
    front_module.to_worker()  # outside a call: nothing to do


def test_a_large_upload_goes_to_a_worker_and_the_connection_serves_on(lab):
    front = front_of(lab[1])
    with proxy(lab, "numbers") as p:
        assert p.square(2) == 4
        in_front = front.count
        a = np.arange(200_000, dtype=np.float64)  # 1.6 MB: no single read holds it
        assert p.total(a) == float(a.sum())
        wait_until(lambda: front.count == in_front - 1, timeout=10)
        assert [p.square(i) for i in range(5)] == [0, 1, 4, 9, 16]
        assert p.total(a[:10]) == 45.0


def _call_bytes(p: Pyro5.api.Proxy, method: str, args: tuple, seq: int) -> bytes:
    serializer = serializers.serializers["msgpack"]
    data = serializer.dumpsCall(p._pyroUri.object, method, args, {})
    return bytes(
        protocol.SendingMessage(protocol.MSG_INVOKE, 0, seq, serializer.serializer_id, data).data
    )


def _reply(p: Pyro5.api.Proxy) -> tuple[int, object]:
    msg = protocol.recv_stub(p._pyroConnection, [protocol.MSG_RESULT])
    return msg.seq, serializers.serializers_by_id[msg.serializer_id].loads(msg.data)


def test_a_request_sent_slowly_holds_nothing(lab):
    with proxy(lab, "numbers") as p, proxy(lab, "numbers") as other:
        p._pyroSerializer = "msgpack"
        p._pyroBind()
        sock = p._pyroConnection.sock
        request = _call_bytes(p, "square", (7,), 1001)
        sock.sendall(request[:10])  # part of a header
        assert other.square(3) == 9  # answered meanwhile
        sock.sendall(request[10:50])  # the header and part of the call
        assert other.square(4) == 16
        sock.sendall(request[50:])
        assert _reply(p) == (1001, 49)


def test_requests_sent_together_are_answered_in_order(lab):
    with proxy(lab, "numbers") as p:
        p._pyroSerializer = "msgpack"
        p._pyroBind()
        sock = p._pyroConnection.sock
        sock.sendall(b"".join(_call_bytes(p, "square", (i,), 2000 + i) for i in range(5)))
        assert [_reply(p) for _ in range(5)] == [(2000 + i, i * i) for i in range(5)]
        assert p.square(6) == 36  # and the proxy's own calls go on


def test_a_garbled_request_ends_its_connection_only(lab):
    with proxy(lab, "numbers") as p, proxy(lab, "numbers") as other:
        p._pyroBind()
        sock = p._pyroConnection.sock
        sock.sendall(b"NOTPYRO!" + bytes(40))
        sock.settimeout(10)
        assert sock.recv(100) == b""  # the server closed it
        assert other.square(9) == 81


def test_closed_connections_leave_the_front(lab):
    _, server, _, _ = lab
    front = front_of(server)
    wait_until(lambda: front.count == 0, timeout=10)
    proxies = [proxy(lab, "numbers") for _ in range(5)]
    for p in proxies:
        assert p.square(1) == 1
    assert front.count == 5
    admitted = server._daemon._pyroinst_admission.held.get("127.0.0.1", 0)
    for p in proxies:
        p._pyroRelease()
    wait_until(lambda: front.count == 0, timeout=10)
    wait_until(
        lambda: server._daemon._pyroinst_admission.held.get("127.0.0.1", 0) == admitted - 5,
        timeout=10,
    )


def test_tls_connections_are_served_by_workers():
    token = "front-test-token-0123456789abcdef"
    with lab_token(token), pyroinst.EmbeddedNameServer("127.0.0.1", 0, token=token) as ns:
        server = pyroinst.InstServer(
            host="127.0.0.1", ns_host=ns.host, ns_port=ns.port, token=token, heartbeat=0
        )
        server.add_device(Numbers(), "numbers")
        with server:
            front = front_of(server)
            with Pyro5.api.Proxy(f"PYRONAME:numbers@{ns.host}:{ns.port}") as p:
                assert p.square(3) == 9
                assert front.count == 0 and front.answered == 0


def test_a_stopped_server_ends_the_front_and_its_connections():
    ns = pyroinst.EmbeddedNameServer("127.0.0.1", 0).start()
    try:
        server = pyroinst.InstServer(host="127.0.0.1", port=0, ns_host=ns.host, ns_port=ns.port)
        server.add_device(Numbers(), "numbers")
        server.start()
        front = front_of(server)
        p = Pyro5.api.Proxy(f"PYRONAME:numbers@{ns.host}:{ns.port}")
        assert p.square(2) == 4
        server.stop()
        assert not front._leader.is_alive() and not front._watch.is_alive()
        with pytest.raises(Pyro5.errors.CommunicationError):
            p._pyroConnection.sock.settimeout(10)
            p.square(3)
        p._pyroRelease()
    finally:
        ns.stop()


def test_the_front_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("PYROINST_FRONT_PATIENCE", "0")
    ns = pyroinst.EmbeddedNameServer("127.0.0.1", 0).start()
    try:
        server = pyroinst.InstServer(host="127.0.0.1", port=0, ns_host=ns.host, ns_port=ns.port)
        server.add_device(Numbers(), "numbers")
        with server:
            assert server._daemon.transportServer.front is None
            with Pyro5.api.Proxy(f"PYRONAME:numbers@{ns.host}:{ns.port}") as p:
                assert p.square(12) == 144
    finally:
        ns.stop()


@pytest.mark.parametrize(
    ("text", "expected", "warned"),
    [
        ("", 0.005, False),
        ("0", 0.0, False),
        ("0.02", 0.02, False),
        ("soon", 0.005, True),
        ("-1", 0.005, True),
        ("100", 0.005, True),
    ],
)
def test_the_patience_setting(monkeypatch, caplog, text, expected, warned):
    monkeypatch.setenv("PYROINST_FRONT_PATIENCE", text)
    with caplog.at_level(logging.WARNING, logger="pyroinst.front"):
        assert front_module.configured_patience() == expected
    assert ("PYROINST_FRONT_PATIENCE" in caplog.text) is warned


def test_a_client_that_vanishes_mid_request_costs_nothing(lab):
    with proxy(lab, "numbers") as other:
        for _ in range(3):
            p = proxy(lab, "numbers")
            p._pyroBind()
            sock = p._pyroConnection.sock
            sock.sendall(_call_bytes(p, "square", (2,), 7)[:30])
            sock.shutdown(socket.SHUT_RDWR)
            p._pyroRelease()
        assert other.square(11) == 121

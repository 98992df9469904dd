"""What a stranger's bytes (no token, only the TCP port) can do to a server: nothing.

One lab per module, in its own process (``tests.fuzz_target``: a name server and a device
server with a token), attacked from loopback addresses of this machine while a
legitimate client keeps opening connections and calling (``Legit``). Each test checks that
client before, during and after, and that the server process is still the same one.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import Pyro5.api
import pytest
from Pyro5 import protocol, serializers

import pyroinst
from tests import authwire
from tests.helpers import (
    clean_env,
    lab_token,
    run_python,
    start_fuzz_target,
    stop_fuzz_target,
    wait_until,
)

TOKEN = "stranger-lab-token-7c41e9"
HANDSHAKE_TIMEOUT = 2.0
MAX_QUEUED = 5
MAX_MESSAGE = 32 << 20
BLOBS = Path(__file__).resolve().parent / "blobs"
HEADER = struct.Struct(protocol._header_format)
MARSHAL = serializers.MarshalSerializer.serializer_id
MSGPACK = serializers.MsgpackSerializer.serializer_id
JSON = serializers.JsonSerializer.serializer_id


def wire(msgtype: int, serializer: int, payload: bytes, flags: int = 0, seq: int = 1) -> bytes:
    """A Pyro5 message built by hand (nothing checked: it may be hostile)."""
    return (
        HEADER.pack(
            b"PYRO",
            protocol.PROTOCOL_VERSION,
            msgtype,
            serializer,
            flags,
            seq,
            len(payload),
            0,
            b"\0" * 16,
            0,
            protocol._magic_number,
        )
        + payload
    )


def status(pid: int, key: str) -> int:
    """A field of /proc/PID/status (threads, kB of memory): measured from outside."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def bomb(inflated: int) -> bytes:
    """zlib data that inflates to ``inflated`` zero bytes (made in 1 MiB steps)."""
    packer = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(inflated >> 20)]
    return b"".join(parts) + packer.flush()


class Lab:
    def __init__(self, proc, ns_port: int, uri: str) -> None:
        self.proc = proc
        self.uri = uri
        self.dev = ("127.0.0.1", int(uri.rsplit(":", 1)[1]))
        self.ns = ("127.0.0.1", ns_port)

    def threads(self) -> int:
        return status(self.proc.pid, "Threads")

    def rss_kb(self) -> int:
        return status(self.proc.pid, "VmRSS")


@pytest.fixture(scope="module")
def lab():
    proc, (ns_port, uri) = start_fuzz_target(
        clean_env(PYROINST_TOKEN=TOKEN),
        "--handshake-timeout",
        str(HANDSHAKE_TIMEOUT),
        "--max-queued-jobs",
        str(MAX_QUEUED),
        "--max-message-size",
        str(MAX_MESSAGE),
    )
    try:
        with lab_token(TOKEN):
            yield Lab(proc, int(ns_port), uri)
    finally:
        noisy = stop_fuzz_target(proc)
    assert noisy == [], "\n".join(noisy[:20])


class Legit:
    """A legitimate client in a thread: a fresh connection and a call, again and again."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Legit:
        self.call()  # before
        self._thread.start()
        return self

    def call(self) -> None:
        started = time.monotonic()
        try:
            with Pyro5.api.Proxy(self.lab.uri) as dev:
                dev._pyroTimeout = 10
                assert dev.echo("legit") == "legit"
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            self.errors.append(f"{type(exc).__name__}: {exc}")
        self.latencies.append(time.monotonic() - started)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.call()

    def calls(self) -> int:
        return len(self.latencies)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.call()  # after
        assert self.lab.proc.poll() is None, "the server process died"
        assert self.errors == [], self.errors[:5]


def replies(data: bytes) -> list[tuple]:
    return authwire.parse(data)


# -- marshal -------------------------------------------------------------------------------
@pytest.mark.parametrize("blob", ["marshal_crash.bin", "marshal_freeze.bin"])
def test_a_marshal_handshake_is_refused_unread(lab, blob):
    data = (BLOBS / blob).read_bytes()
    with Legit(lab) as legit:
        for address in (lab.dev, lab.ns):
            answer = replies(authwire.exchange(address, wire(protocol.MSG_CONNECT, MARSHAL, data)))
            assert [a[0] for a in answer] == [protocol.MSG_CONNECTFAIL]
            assert b"refuses the marshal serializer" in answer[0][3]
        start = legit.calls()
        wait_until(lambda: legit.calls() >= start + 3, timeout=10)
    assert max(legit.latencies) < 1.0, legit.latencies  # the freeze blob held a ping 31 s


def test_marshal_before_and_after_the_proof(lab):
    crash = (BLOBS / "marshal_crash.bin").read_bytes()
    with Legit(lab):
        # Before the proof: the proof itself in marshal.
        raw = authwire.RawClient(lab.dev)
        try:
            msgtype, _ = raw.hello()
            assert msgtype == protocol.MSG_CONNECTOK
            raw.conn.send(wire(protocol.MSG_PING, MARSHAL, crash))
            reply = raw.receive()
            assert reply[0] == protocol.MSG_CONNECTFAIL
            assert raw.closed(timeout=HANDSHAKE_TIMEOUT + 1)
        finally:
            raw.close()
        # After the proof: a call in marshal is answered with an error, never decoded.
        raw = authwire.RawClient(lab.dev)
        try:
            raw.authenticate(TOKEN)
            raw.conn.send(wire(protocol.MSG_INVOKE, MARSHAL, crash))
            reply = raw.receive()
            assert reply[0] == protocol.MSG_RESULT and reply[1] & protocol.FLAGS_EXCEPTION
            assert b"refuses the marshal serializer" in reply[3]
            assert raw.closed(timeout=5)
        finally:
            raw.close()


class FakeServer:
    """Answers every CONNECT with ``answer`` (bytes made by hand), in a thread."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            with client:
                client.settimeout(5)
                try:
                    header = client.recv(HEADER.size, socket.MSG_WAITALL)
                    fields = HEADER.unpack(header)
                    client.recv(fields[6] + fields[7], socket.MSG_WAITALL)
                    client.sendall(self.answer)
                    client.recv(1)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.listener.close()


CLIENT = """
import sys, Pyro5.api, pyroinst
proxy = Pyro5.api.Proxy("PYRO:dev@127.0.0.1:%d")
proxy._pyroTimeout = 5
try:
    proxy._pyroBind()
except pyroinst.MessageRefused as exc:
    print("REFUSED", exc)
"""


@pytest.mark.parametrize(
    "answer, expected",
    [
        (
            wire(protocol.MSG_CONNECTOK, MARSHAL, (BLOBS / "marshal_crash.bin").read_bytes()),
            "encoded in marshal, not in msgpack",
        ),
        (
            wire(protocol.MSG_CONNECTOK, MARSHAL, (BLOBS / "marshal_freeze.bin").read_bytes()),
            "encoded in marshal, not in msgpack",
        ),
        (wire(protocol.MSG_CONNECTOK, JSON, b'{"handshake": "hello"}'), "in json, not in msgpack"),
        (
            wire(protocol.MSG_CONNECTOK, MSGPACK, bomb(8 << 20), flags=protocol.FLAGS_COMPRESSED),
            "inflates beyond",
        ),
        (wire(protocol.MSG_CONNECTOK, MSGPACK, b"\x91" * 5000 + b"\xc0"), "does not decode"),
    ],
    ids=["crash", "freeze", "json", "compressed", "nested"],
)
def test_a_client_refuses_a_hostile_handshake_answer(answer, expected):
    fake = FakeServer(answer)
    try:
        # In a child process: if the blob were decoded, it would crash that process.
        done = run_python("-c", CLIENT % fake.port, timeout=60)
    finally:
        fake.close()
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("REFUSED"), done.stdout + done.stderr[-2000:]
    assert expected in done.stdout
    assert f"127.0.0.1:{fake.port}" in done.stdout


# -- compression ---------------------------------------------------------------------------
def test_a_compressed_handshake_is_refused_unread(lab):
    gigabyte = bomb(1 << 30)  # about 1 MB that inflates to 1 GiB
    small = bomb(16 << 20)
    with Legit(lab):
        rss = lab.rss_kb()
        for address in (lab.dev, lab.ns):
            for payload in (gigabyte, small):
                message = wire(
                    protocol.MSG_CONNECT, MSGPACK, payload, flags=protocol.FLAGS_COMPRESSED
                )
                answer = replies(authwire.exchange(address, message, timeout=10))
                assert [a[0] for a in answer] == [protocol.MSG_CONNECTFAIL]
                assert b"compressed" in answer[0][3]
        assert lab.rss_kb() - rss < 50_000


def test_after_the_proof_inflation_stops_at_max_message_size(lab):
    with Legit(lab):
        rss = lab.rss_kb()
        raw = authwire.RawClient(lab.dev)
        try:
            raw.authenticate(TOKEN)
            message = wire(
                protocol.MSG_INVOKE, MSGPACK, bomb(1 << 30), flags=protocol.FLAGS_COMPRESSED
            )
            raw.conn.send(message)
            assert raw.closed(timeout=10)  # refused: the connection ends
        finally:
            raw.close()
        assert lab.rss_kb() - rss < 50_000  # max_message_size is 32 MiB here


# -- slow and many handshakes --------------------------------------------------------------
def dribble(
    lab: Lab, sources: list[str], per_source: int, seconds: float, reconnect: bool
) -> list[float]:
    """Connections that send a valid CONNECT one byte every 0.8 s; how long each lived."""
    message = authwire.connect_message({"pyroinst_auth": 1, "nonce": "ab" * 32})
    selector = selectors.DefaultSelector()
    lived: list[float] = []
    state: dict[socket.socket, list] = {}

    def open_one(source: str) -> None:
        sock = socket.create_connection(lab.dev, timeout=2, source_address=(source, 0))
        sock.setblocking(False)
        state[sock] = [time.monotonic(), 0, source, time.monotonic()]
        selector.register(sock, selectors.EVENT_READ)

    def closed(sock: socket.socket) -> None:
        opened, _, source, _ = state.pop(sock)
        lived.append(time.monotonic() - opened)
        selector.unregister(sock)
        sock.close()
        if reconnect and time.monotonic() < end:
            open_one(source)

    end = time.monotonic() + seconds
    try:
        for source in sources:
            for _ in range(per_source):
                open_one(source)
        while state and time.monotonic() < end + HANDSHAKE_TIMEOUT + 2:
            for key, _ in selector.select(0.1):
                sock = key.fileobj
                try:
                    if sock.recv(4096):
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                closed(sock)  # type: ignore[arg-type]
            now = time.monotonic()
            for sock, entry in list(state.items()):
                if now - entry[3] >= 0.8 and entry[1] < len(message):
                    entry[3] = now
                    try:
                        sock.send(message[entry[1] : entry[1] + 1])
                        entry[1] += 1
                    except OSError:
                        closed(sock)
    finally:
        for sock in list(state):
            selector.unregister(sock)
            sock.close()
        selector.close()
    return lived


def test_slow_handshakes_are_closed_at_their_deadline(lab):
    with Legit(lab):
        lived = dribble(lab, ["127.4.0.1", "127.4.0.2"], 20, 0.0, reconnect=False)
    assert len(lived) == 40
    # Each from its accept (the connect here), whatever it sent meanwhile.
    assert max(lived) <= HANDSHAKE_TIMEOUT + 1.0, sorted(lived)[-5:]


def test_thirty_addresses_of_slow_clients_starve_no_one(lab):
    sources = [f"127.5.0.{n}" for n in range(1, 31)]
    with Legit(lab) as legit:
        start = legit.calls()
        dribble(lab, sources, 7, 2 * HANDSHAKE_TIMEOUT + 1, reconnect=True)
        assert legit.calls() - start >= 10


def send_wrong_proof(raw: authwire.RawClient, answer: dict) -> None:
    proof = authwire.client_proof(
        authwire.parse_token("not the token").derived,
        raw.client_nonce,
        bytes.fromhex(answer["handshake"]["nonce"]),
        raw.binding,
    )
    raw.conn.send(authwire.message(protocol.MSG_PING, b"", {authwire.PROOF_ANNOTATION: proof}))


def test_failed_proofs_hold_no_worker(lab):
    with Legit(lab) as legit:
        baseline = lab.threads()
        clients = []
        try:
            for _ in range(40):
                try:
                    raw = authwire.RawClient(lab.dev, source="127.6.0.1")
                except (ssl.SSLError, OSError):
                    continue  # past the handshakes one address may have: closed at once
                clients.append(raw)
                msgtype, answer = raw.hello()
                if msgtype == protocol.MSG_CONNECTOK:
                    send_wrong_proof(raw, answer)  # its refusal comes later, by a timer
            peak = baseline
            deadline = time.monotonic() + 2 * HANDSHAKE_TIMEOUT
            start = legit.calls()
            while time.monotonic() < deadline:
                peak = max(peak, lab.threads())
                time.sleep(0.05)
            assert legit.calls() - start >= 5
        finally:
            for raw in clients:
                raw.close()
    assert peak <= baseline + 5, (baseline, peak)


def test_failed_proofs_are_refused_by_timers_without_threads(lab):
    """The slow-down still holds: after the free failures, refusals come at most one a
    second per address, and no worker waits for them."""
    raw_answers = []
    for _ in range(6):
        raw = authwire.RawClient(lab.dev, source="127.6.1.1")
        try:
            msgtype, answer = raw.hello()
            assert msgtype == protocol.MSG_CONNECTOK
            started = time.monotonic()
            send_wrong_proof(raw, answer)
            reply = raw.receive()
            raw_answers.append((reply[0], time.monotonic() - started))
        finally:
            raw.close()
    assert all(kind == protocol.MSG_CONNECTFAIL for kind, _ in raw_answers)
    assert raw_answers[-1][1] >= 0.2, raw_answers  # the fourth and later wait


# -- oneway calls, queued jobs, reservations -----------------------------------------------
def test_oneway_calls_use_no_thread_of_their_own(lab):
    baseline = lab.threads()
    peak = baseline
    with Pyro5.api.Proxy(lab.uri) as dev:
        dev._pyroBind()
        dev._pyroOneway.add("store")
        for i in range(3000):
            dev.store(i)
            if i % 100 == 0:
                peak = max(peak, lab.threads())
        assert dev.last_stored() == 2999  # in order, on the connection's own worker
        peak = max(peak, lab.threads())
        assert dev.big(10).result(10).shape == (10,)
    assert peak <= baseline + 5, (baseline, peak)


def test_max_queued_jobs(lab):
    dev = pyroinst.connect("dev", *lab.ns)
    try:
        running = dev.hold(3)
        wait_until(lambda: running.status()["state"] == "running")
        queued = [dev.hold(0.05) for _ in range(MAX_QUEUED)]
        with pytest.raises(pyroinst.DeviceBusy, match="max_queued_jobs") as caught:
            dev.hold(0.05)
        assert f"{MAX_QUEUED} jobs waiting" in str(caught.value)
        with pytest.raises(pyroinst.DeviceBusy, match="max_queued_jobs"):
            dev.job_start("echo", 1)
        running.cancel()
        for job in queued:  # nothing queued was lost
            assert job.result(timeout=20) == "held"
        assert dev.hold(0.01).result(timeout=10) == "held"
    finally:
        dev._pyroRelease()


def test_a_reservation_cancels_others_queued_jobs(lab):
    bob = pyroinst.connect("dev", *lab.ns, owner="bob")
    alice = pyroinst.connect("dev", *lab.ns, owner="alice")
    try:
        running = bob.hold(1.0)
        wait_until(lambda: running.status()["state"] == "running")
        waiting = [bob.hold(0.01) for _ in range(2)]
        alice.reserve("alice", 30)
        try:
            for job in waiting:
                with pytest.raises(pyroinst.DeviceReserved, match="alice"):
                    job.result(timeout=10)
                status = job.status()
                assert status["state"] == "cancelled"
                assert "DeviceReserved" in status["error"]
            # The job that was running when the reservation was granted ends normally.
            assert running.result(timeout=10) == "held"
            assert alice.hold(0.01).result(timeout=10) == "held"
            with pytest.raises(pyroinst.DeviceReserved):
                bob.hold(0.01)
        finally:
            alice.release()
        assert bob.hold(0.01).result(timeout=10) == "held"
    finally:
        bob._pyroRelease()
        alice._pyroRelease()


def test_a_job_whose_thread_cannot_start_leaves_the_device_usable(ns, make_server, monkeypatch):
    import threading as threading_module

    from tests.helpers import Echo

    make_server({"dev": Echo()})
    dev = pyroinst.connect("dev", ns.host, ns.port)
    real_start = threading_module.Thread.start

    def no_worker_threads(self):
        if self.name.startswith("pyroinst-"):
            raise RuntimeError("can't start new thread")
        return real_start(self)

    try:
        monkeypatch.setattr(threading_module.Thread, "start", no_worker_threads)
        job = dev.big(10)
        concurrent = dev.job_start("cached")
        monkeypatch.undo()
        for failed in (job, concurrent):
            assert failed.wait(timeout=10)
            assert failed.status()["state"] == "failed"
            with pytest.raises(pyroinst.PyroinstError, match="could not start a thread"):
                failed.result(timeout=5)
        # The next jobs start normally: nothing is stuck "queued" behind the failure.
        assert dev.big(10).result(timeout=10).shape == (10,)
        assert dev.job_start("cached").result(timeout=10) == "cached"
    finally:
        dev._pyroRelease()


def test_no_route_for_a_broadcast_is_a_clear_error():
    from tests.netns import Namespace, namespaces_unavailable

    why = namespaces_unavailable()
    if why:
        pytest.skip(why)
    with Namespace() as space:  # loopback only: no route for a broadcast
        env = clean_env()
        done = subprocess.run(
            space.command(sys.executable, "-m", "pyroinst", "list"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no network route for a broadcast" in lines[0], done.stderr
    assert "--ns-host" in lines[0]

"""The short paths of a call give what Pyro5's general code gives: the same bytes on the
wire, the same messages parsed, the same refusals; and messages that arrive together are
each answered."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import threading
import uuid

import numpy as np
import Pyro5.errors
import Pyro5.socketutil
import pytest
from Pyro5 import protocol, serializers
from Pyro5.callcontext import current_context

import pyroinst
from pyroinst import receiving, sending
from pyroinst.dispatch import _uuid4
from pyroinst.wire import local
from tests.helpers import wait_until

#: Pyro5's own SendingMessage (pyroinst's is its subclass).
PyroMessage = sending.SendingMessage.__mro__[1]
MSGPACK = serializers.serializers["msgpack"]


def annotation_sets():
    big = memoryview(np.arange(20_000, dtype=np.float64)).cast("B")
    return [
        None,
        {},
        {"ABCD": b"x" * 10},
        {"^000": bytes(48), "~000": big},
        {"CORR": b"12", "^000": bytes(40), "~000": big, "^001": bytes(8), "~001": big[:8192]},
        {"~000": big, "TAIL": bytearray(b"abc")},
    ]


@pytest.mark.parametrize("correlation", [None, uuid.uuid4()])
@pytest.mark.parametrize("payload_size", [0, 10, 70_000])
@pytest.mark.parametrize("annotations", range(len(annotation_sets())))
def test_a_message_has_pyro5s_bytes(correlation, payload_size, annotations):
    chosen = annotation_sets()[annotations]
    payload = bytes(range(256)) * (payload_size // 256) + b"p" * (payload_size % 256)
    saved = current_context.correlation_id
    current_context.correlation_id = correlation
    try:
        for msgtype in (protocol.MSG_INVOKE, protocol.MSG_RESULT):
            ours = sending.SendingMessage(msgtype, 0, 7, MSGPACK.serializer_id, payload, chosen)
            theirs = PyroMessage(msgtype, 0, 7, MSGPACK.serializer_id, payload, chosen)
            assert bytes(ours.data) == bytes(theirs.data)
            assert (ours.flags, ours.corr_id, ours.seq) == (theirs.flags, theirs.corr_id, 7)
    finally:
        current_context.correlation_id = saved


@pytest.mark.parametrize("annotations", range(len(annotation_sets())))
def test_a_received_message_is_parsed_as_pyro5_parses_it(annotations):
    chosen = annotation_sets()[annotations] or {"ABCD": b"1"}
    data = bytes(PyroMessage(protocol.MSG_RESULT, 0, 1, 4, b"payload", chosen).data)
    header, body = data[: protocol._header_size], data[protocol._header_size :]
    ours = protocol.ReceivingMessage(header)
    receiving._add_annotated(ours, body)
    theirs = protocol.ReceivingMessage(header)
    theirs.add_payload(body)
    assert {k: bytes(v) for k, v in ours.annotations.items()} == {
        k: bytes(v) for k, v in theirs.annotations.items()
    }
    assert bytes(ours.data) == bytes(theirs.data) == b"payload"


ONE_ARRAY_LIKE = [
    {"^000": bytes(48), "~000": b"a" * 100, "~001": b"b" * 8},  # one more array after it
    {"^000": bytes(48), "~000": b"a" * 100, "XTRA": b"z"},  # and someone's annotation
    {"^000": bytes(47), "~000": b"a" * 100},  # another pad
]


@pytest.mark.parametrize("annotations", range(len(annotation_sets()) + len(ONE_ARRAY_LIKE)))
def test_a_calls_annotations_are_split_as_pyro5_parses_them(annotations):
    """A call's or result's annotations: pyroinst's go to the decoding thread, the rest to
    the message, each as Pyro5 parses them (one array's layout has a short path)."""
    chosen = (annotation_sets() + ONE_ARRAY_LIKE)[annotations] or {"ABCD": b"1"}
    data = bytes(PyroMessage(protocol.MSG_RESULT, 0, 1, 4, b"payload", chosen).data)
    header, body = data[: protocol._header_size], data[protocol._header_size :]
    theirs = protocol.ReceivingMessage(header)
    theirs.add_payload(body)
    expected = {k: bytes(v) for k, v in theirs.annotations.items()}
    ours = protocol.ReceivingMessage(header)
    try:
        receiving._add_and_take(ours, body)
        taken = {k: bytes(v) for k, v in (local.incoming or {}).items()}
        received = list(local.received)
    finally:
        local.incoming, local.received = None, ()
    assert {k: bytes(v) for k, v in ours.annotations.items()} == {
        k: v for k, v in expected.items() if k[0] not in "~^"
    }
    assert taken == {k: v for k, v in expected.items() if k[0] in "~^"}
    assert received == sorted(k for k in expected if k[0] == "~")
    assert bytes(ours.data) == b"payload"


def test_an_annotation_longer_than_the_message_is_refused():
    data = bytes(PyroMessage(protocol.MSG_RESULT, 0, 1, 4, b"xy", {"ABCD": b"1234"}).data)
    header, body = data[: protocol._header_size], bytearray(data[protocol._header_size :])
    body[4:8] = (1000).to_bytes(4, "big")  # the annotation says it is 1000 bytes
    with pytest.raises(Pyro5.errors.ProtocolError, match="exceeds"):
        receiving._add_annotated(protocol.ReceivingMessage(header), body)
    with pytest.raises(Pyro5.errors.ProtocolError, match="exceeds"):
        receiving._add_and_take(protocol.ReceivingMessage(header), body)


def test_correlation_ids_are_version_4_uuids():
    ids = {_uuid4() for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:20]:
        assert value.version == 4 and value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value and uuid.UUID(bytes=value.bytes) == value


def test_a_new_thread_reads_the_call_state_defaults():
    seen = {}

    def read():
        seen.update(proxy=local.proxy, peer_max=local.peer_max, incoming=local.incoming)
        seen["received"] = pyroinst.fastwire.received_array_keys()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(10)
    assert seen == {"proxy": None, "peer_max": None, "incoming": None, "received": []}


def test_calls_sent_together_are_each_answered_in_order(echo):
    """Two requests in one write: the server's first read takes both, and answers both;
    the client's read of the first reply may take the second too."""
    assert echo.echo(0) == 0  # connected
    conn = echo._pyroConnection
    calls = [MSGPACK.dumpsCall(conn.objectId, "echo", (value,), {}) for value in ("a", "b" * 3000)]
    together = b"".join(
        bytes(PyroMessage(protocol.MSG_INVOKE, 0, 1000 + i, 4, call).data)
        for i, call in enumerate(calls)
    )
    conn.sock.sendall(together)
    first = protocol.recv_stub(conn, [protocol.MSG_RESULT])
    second = protocol.recv_stub(conn, [protocol.MSG_RESULT])
    assert (first.seq, MSGPACK.loads(first.data)) == (1000, "a")
    assert (second.seq, MSGPACK.loads(second.data)) == (1001, "b" * 3000)
    assert conn.__dict__.get("_pyroinst_ahead") is None
    assert echo.echo(np.arange(10_000.0)).sum() == np.arange(10_000.0).sum()  # still in step


def test_a_servants_lookup_refuses_what_pyro5_refuses(echo):
    assert echo.echo(1) == 1
    assert echo.echo(2) == 2  # (the second call finds the method remembered)
    for name, refused in (
        ("_device", "private"),
        ("__init__", "private"),
        ("no_such_method", "no_such_method"),
    ):
        with pytest.raises(AttributeError, match=refused):
            echo._pyroInvoke(name, (), {})
    assert echo.echo(3) == 3


def test_a_servants_lookup_says_which_methods_are_pyro5_callbacks():
    """Pyro5 re-raises a callback's error in the daemon too: the short path must know a
    callback as Pyro5's handleRequest does, remembered or not."""
    import Pyro5.api

    from pyroinst.dispatch import _exposed_method

    @Pyro5.api.expose
    class Servant:
        _pyroinst_servant = True

        @Pyro5.api.callback
        def told(self):
            return "told"

        def plain(self):
            return "plain"

    for cls in (Servant, type("Other", (Servant,), {"_pyroinst_servant": False})):
        obj = cls()
        for _ in range(2):  # (a servant's second lookup is the remembered one)
            method, callback = _exposed_method(obj, "told")
            assert method() == "told" and callback is True
            method, callback = _exposed_method(obj, "plain")
            assert method() == "plain" and callback is False


def test_a_reply_carries_the_calls_correlation_id(echo):
    """Given by the client: the same back; none given: a version 4 UUID made for it."""
    assert echo.echo(0) == 0
    conn = echo._pyroConnection
    call = MSGPACK.dumpsCall(conn.objectId, "echo", (1,), {})
    given = uuid.uuid4()
    saved = current_context.correlation_id
    try:
        current_context.correlation_id = given
        with_id = bytes(PyroMessage(protocol.MSG_INVOKE, 0, 2000, 4, call).data)
        current_context.correlation_id = None
        without = bytes(PyroMessage(protocol.MSG_INVOKE, 0, 2001, 4, call).data)
    finally:
        current_context.correlation_id = saved
    conn.sock.sendall(with_id + without)
    first = protocol.recv_stub(conn, [protocol.MSG_RESULT])
    second = protocol.recv_stub(conn, [protocol.MSG_RESULT])
    assert uuid.UUID(bytes=bytes(first.corr_id)) == given
    assert first.flags & protocol.FLAGS_CORR_ID and second.flags & protocol.FLAGS_CORR_ID
    made = uuid.UUID(bytes=bytes(second.corr_id))
    assert made.version == 4 and made != given


# -- sockets with a timeout: what is there is taken (or written) without CPython's poll ------
def _small_buffers(a: socket.socket, b: socket.socket) -> None:
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def _read_all(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_a_small_message_more_than_the_socket_takes_arrives_whole_with_a_timeout():
    """The first write takes what fits; sendall (with its timeout) sends the rest."""
    a, b = socket.socketpair()
    with a, b:
        _small_buffers(a, b)
        a.settimeout(10)
        b.settimeout(10)
        message = bytes(range(256)) * 200  # 51 200 bytes: more than both buffers hold
        received = {}
        reader = threading.Thread(target=lambda: received.update(data=_read_all(b, len(message))))
        reader.start()
        try:
            sending.send_data(a, message)
        finally:
            reader.join(10)
        assert not reader.is_alive()
        assert received["data"] == message


def test_a_peer_that_does_not_read_is_a_timeout_not_a_hang():
    a, b = socket.socketpair()
    with a, b:
        _small_buffers(a, b)
        a.settimeout(0.2)
        with pytest.raises(Pyro5.errors.TimeoutError):
            sending.send_data(a, b"x" * 60_000)


class _Conn:
    """What _receive_big needs of a connection: a place for what a header's read took."""


@pytest.mark.parametrize("timeout", [None, 10.0])
@pytest.mark.parametrize("later", [0, 20_000])
def test_a_large_message_is_received_whole(timeout, later):
    """Whether all of it has arrived (taken at once) or part comes later."""
    message = np.random.default_rng(1).integers(0, 255, 60_000, dtype=np.uint8).tobytes()
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(timeout)
        conn = _Conn()
        conn._pyroinst_ahead = memoryview(message)[:5000]  # (what the header's read took)
        a.sendall(message[5000 : len(message) - later])
        writer = threading.Thread(target=a.sendall, args=(message[len(message) - later :],))
        writer.start()
        try:
            got = receiving._receive_big(conn, b, len(message))
        finally:
            writer.join(10)
        assert bytes(got) == message
        assert conn._pyroinst_ahead is None


@pytest.mark.parametrize("timeout", [None, 10.0])
def test_a_large_message_cut_short_is_a_closed_connection(timeout):
    a, b = socket.socketpair()
    with b:
        b.settimeout(timeout)
        with a:
            a.sendall(b"y" * 50_000)
        with pytest.raises(Pyro5.errors.ConnectionClosedError, match="not enough data"):
            receiving._receive_big(_Conn(), b, 100_000)


# -- a connection's timeout as the kernel's: one system call per send and receive -----------
class _SockConn(_Conn):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._live = True

    def recv(self, size: int) -> bytes:  # (Pyro5's, as SocketConnection has it)
        return Pyro5.socketutil.receive_data(self.sock, size)


def test_a_timeout_on_a_plain_socket_is_the_kernels():
    a, b = socket.socketpair()
    with a, b:
        conn = _SockConn(a)
        sending.set_timeout(conn, 0.25)
        assert a.gettimeout() is None  # blocking: no poll before each send and receive
        assert sending.timeout_of(conn) == 0.25
        raw = a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
        assert raw != bytes(16)
        # Nothing arrives: the receive ends with Pyro5's timeout, not a hang or a retry loop.
        with pytest.raises(Pyro5.errors.TimeoutError):
            receiving.recv_stub(conn, [protocol.MSG_RESULT])
        # Part of a message arrives, the rest never: the same.
        b.sendall(bytes(PyroMessage(protocol.MSG_RESULT, 0, 1, 4, b"p" * 100).data)[:30])
        with pytest.raises(Pyro5.errors.TimeoutError):
            receiving.recv_stub(conn, [protocol.MSG_RESULT])
        # A peer that reads nothing: sending ends with Pyro5's timeout.
        _small_buffers(a, b)
        with pytest.raises(Pyro5.errors.TimeoutError):
            sending.send_data(a, b"x" * 60_000)
        with pytest.raises(Pyro5.errors.TimeoutError):
            sending.send_data(a, sending.Gather([b"h" * 10, b"y" * 200_000]))
        sending.set_timeout(conn, None)
        assert a.gettimeout() is None and sending.timeout_of(conn) is None
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) == bytes(16)


def test_a_large_message_on_a_socket_with_the_kernels_timeout_arrives_whole():
    message = bytes(PyroMessage(protocol.MSG_RESULT, 0, 1, 4, b"q" * 200_000).data)
    a, b = socket.socketpair()
    with a, b:
        conn = _SockConn(a)
        sending.set_timeout(conn, 10.0)
        writer = threading.Thread(target=b.sendall, args=(message,))
        writer.start()
        try:
            msg = receiving.recv_stub(conn, [protocol.MSG_RESULT])
        finally:
            writer.join(10)
        assert bytes(msg.data) == b"q" * 200_000


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    return a, b


def _queued(sock: socket.socket) -> int:
    """Bytes that have arrived on ``sock`` and were not read yet."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)))[0]


def _reading(conn: _SockConn, sock: socket.socket, size: int) -> tuple[threading.Thread, dict]:
    """A started thread receiving a large message of ``size`` bytes on ``sock``; its
    ``"got"`` (the bytes) or ``"error"`` goes into the dict."""
    result: dict = {}

    def read() -> None:
        try:
            result["got"] = bytes(receiving._receive_big(conn, sock, size))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    reader = threading.Thread(target=read)
    reader.start()
    return reader, result


@pytest.mark.parametrize("tail", [1, 4096, receiving.LOW_MARK - 1, receiving.LOW_MARK, 300_000])
def test_a_large_message_whose_tail_comes_late_is_received_whole(tail):
    """A large message is read woken once per LOW_MARK bytes (SO_RCVLOWAT), but its last
    bytes never wait for a mark they cannot reach: with the tail sent only once the reader
    has taken what it could of the rest, the message arrives (a hang would end in the
    kernel's timeout), and the mark is back at 1 for the connection's next read."""
    size = 3 * 2**20
    message = np.random.default_rng(2).integers(0, 255, size, dtype=np.uint8).tobytes()
    a, b = _tcp_pair()
    with a, b:
        conn = _SockConn(b)
        sending.set_timeout(conn, 120.0)  # (a wait for a mark never reached ends there)
        reader, result = _reading(conn, b, size)
        try:
            a.sendall(message[:-tail])
            # The reader has taken what it could: all of it, or it waits for a mark's
            # worth more (which only the tail can bring).
            wait_until(lambda: _queued(b) < receiving.LOW_MARK, timeout=30)
            a.sendall(message[-tail:])
            reader.join(30)
            assert not reader.is_alive(), "the tail waited for a mark it could not reach"
        finally:
            if reader.is_alive():
                b.shutdown(socket.SHUT_RDWR)  # (ends the read)
            reader.join(30)
        assert "error" not in result, result.get("error")
        assert result["got"] == message
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


def test_a_large_message_on_a_slow_link_is_no_timeout():
    """A link slower than a mark's worth per timeout is no silent peer: the kernel ends
    each wait at the timeout with what came (a receive says "timeout" only when nothing
    did), so the message arrives whole. A peer that sends nothing at all is a timeout."""
    size = 3 * 2**19
    message = np.random.default_rng(3).integers(0, 255, size, dtype=np.uint8).tobytes()
    a, b = _tcp_pair()
    with a, b:
        conn = _SockConn(b)
        sending.set_timeout(conn, 0.2)
        reader, result = _reading(conn, b, size)
        try:
            a.sendall(message[: 2**20])
            # Then a link of about 400 KB/s (8 KB every 20 ms: a mark's worth takes 0.65 s,
            # more than three timeouts).
            for start in range(2**20, size, 8192):
                a.sendall(message[start : start + 8192])
                threading.Event().wait(0.02)  # (the link's pace)
            reader.join(30)
            assert not reader.is_alive()
        finally:
            if reader.is_alive():
                b.shutdown(socket.SHUT_RDWR)
            reader.join(30)
        assert "error" not in result, result.get("error")
        assert result["got"] == message
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1

    a, b = _tcp_pair()
    with a, b:
        conn = _SockConn(b)
        sending.set_timeout(conn, 0.2)
        with pytest.raises(Pyro5.errors.TimeoutError):
            receiving._receive_big(conn, b, size)
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


def test_a_large_message_cut_short_leaves_the_mark_at_one():
    a, b = _tcp_pair()
    with b:
        conn = _SockConn(b)
        sending.set_timeout(conn, 30.0)
        with a:
            a.sendall(b"z" * 2_000_000)
        with pytest.raises(Pyro5.errors.ConnectionClosedError, match="not enough data") as err:
            receiving._receive_big(conn, b, 3 * 2**20)
        assert bytes(err.value.partialData) == b"z" * 2_000_000
        assert b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


def test_other_sockets_keep_cpythons_timeout():
    class Wrapped(socket.socket):
        """Not a plain socket (as a TLS socket is not)."""

    a, b = socket.socketpair()
    with a, b:
        wrapped = Wrapped(fileno=a.detach())
        with wrapped:
            conn = _SockConn(wrapped)
            sending.set_timeout(conn, 0.25)
            assert wrapped.gettimeout() == 0.25
            assert sending.timeout_of(conn) == 0.25

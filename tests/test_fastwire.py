"""Large arrays between pyroinst peers travel as message annotations, both ways."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from Pyro5.callcontext import current_context

import pyroinst
from pyroinst import fastwire
from pyroinst import wire as fastwire_wire

# marshal: refused by pyroinst servers (test_stranger)
SERIALIZERS = ["serpent", "msgpack", "json"]
N = 100_000  # 800 kB of float64: well above fastwire.INLINE_MAX


def big_values():
    rng = np.random.default_rng(1)
    base = rng.random((600, 400))
    return {
        "f64": rng.random(N),
        "f32-2d": rng.random((300, 200)).astype(np.float32),
        "c128": rng.random(N // 4) + 1j * rng.random(N // 4),
        "bool": rng.random(N) > 0.5,
        "noncontig": base[:, ::2],  # not contiguous: travels inline
        "small": np.arange(5),
    }


def assert_same(expected, got):
    assert isinstance(got, np.ndarray)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert got.flags.writeable


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_big_arrays_round_trip(echo, serializer):
    echo._pyroSerializer = serializer
    values = big_values()
    for value in values.values():
        assert_same(value, echo.echo(value))
    nested = echo.echo({"list": [values["f64"], (values["c128"], values["small"])], "d": values})
    assert_same(values["f64"], nested["list"][0])
    assert_same(values["c128"], nested["list"][1][0])
    for name, value in values.items():
        assert_same(value, nested["d"][name])


def test_download_uses_annotations(echo):
    assert echo.echo(1) == 1  # the connection's first call is small
    a = np.arange(N, dtype=np.float64)
    got = echo.job_result(echo.big(N).id, 10)
    assert fastwire.received_array_keys(), "the array did not travel as an annotation"
    # Nothing of the reply's buffer stays in Pyro5's response annotations.
    assert not [k for k in current_context.response_annotations if k[0] in "~^"]
    assert_same(a, got)
    assert got.flags.aligned


def test_upload_uses_annotations_and_cleans_up(echo):
    a = np.arange(N, dtype=np.float64)
    info = echo.upload_info(a)
    assert any(k.startswith("~") for k in info["keys"])
    assert info["writeable"] and info["aligned"] and info["shape"] == [N]
    assert info["sum"] == float(a.sum())
    leftovers = [k for k in current_context.annotations if k[0] in "~^" or k == fastwire.FLAG]
    assert not info["context_keys"]  # the driver saw no array annotations in its context
    assert leftovers == []
    small = echo.upload_info(np.arange(10.0))  # small arrays stay inline
    assert not any(k.startswith("~") for k in small["keys"])


def test_many_arrays_in_one_message(echo):
    arrays = [np.full(20_000, i, dtype=np.int64) for i in range(40)]
    back = echo.echo(arrays)
    for a, b in zip(arrays, back, strict=True):
        assert_same(a, b)


def test_sockets_with_timeouts(echo):
    echo._pyroTimeout = 30  # sending then loops on partial sends
    a = np.random.default_rng(2).random(4_000_000)  # 32 MB
    assert_same(a, echo.echo(a))


def test_job_results_use_annotations(echo):
    job = echo.big(N)
    got = job.result(timeout=10)
    assert_same(np.arange(N, dtype=np.float64), got)
    assert_same(np.arange(N, dtype=np.float64), job.result())  # again: results are kept


def test_gather_message_bytes_match_pyro5():
    from Pyro5 import protocol

    payload = b"x" * 100
    annotations = {"~000": memoryview(np.arange(20_000, dtype=np.float64)).cast("B")}
    ours = fastwire.SendingMessage(protocol.MSG_RESULT, 0, 7, 4, payload, annotations)
    theirs = protocol.SendingMessage.__mro__[1](
        protocol.MSG_RESULT, 0, 7, 4, payload, {"~000": bytes(annotations["~000"])}
    )
    assert isinstance(ours.data, fastwire.Gather)
    assert bytes(ours.data) == theirs.data


@pytest.mark.parametrize("corr", [None, bytes(range(16))])
def test_one_array_reply_bytes_match_pyro5(corr):
    """A reply of one large array is made directly (fastwire.array_reply): byte for byte
    the message Pyro5's SendingMessage makes of it."""
    from Pyro5 import protocol

    a = np.arange(20_000, dtype=np.float64)
    annotations: dict = {}
    assert fastwire.annotate_into(annotations, a) is not None
    payload = b"m" * 40  # (the marker, as far as the layout goes)
    ours = fastwire.array_reply(9, 4, payload, annotations, corr)
    assert isinstance(ours, fastwire.Gather)
    # (Pyro5 takes the correlation id from the call context)
    current_context.correlation_id = uuid.UUID(bytes=corr) if corr else None
    try:
        theirs = protocol.SendingMessage.__mro__[1](
            protocol.MSG_RESULT, 0, 9, 4, payload, {k: bytes(v) for k, v in annotations.items()}
        )
    finally:
        current_context.correlation_id = None
    assert bytes(ours) == theirs.data
    # Any other annotations: the general path.
    annotations["XYZW"] = b"1"
    assert fastwire.array_reply(9, 4, payload, annotations, corr) is None
    assert fastwire.array_reply(9, 4, payload, {"~000": memoryview(a)}, corr) is None


@pytest.mark.parametrize("corr", [None, bytes(range(16))])
@pytest.mark.parametrize("sizes", [[20_000, 20_000], [9_000, 20_001, 8_193, 30_000], [20_000]])
def test_several_arrays_reply_bytes_match_pyro5(corr, sizes):
    """A reply of several large arrays (a stream's batch) is made directly too
    (fastwire.arrays_reply): byte for byte what Pyro5 makes of it, every array's data
    aligned where the receiver's buffer puts it, and the annotations' size the one noted
    while they were added."""
    from Pyro5 import protocol

    annotations: dict = {}
    for n in sizes:
        assert fastwire.annotate_into(annotations, np.arange(n, dtype=np.float64)) is not None
    payload = b"m" * 57
    ours = fastwire.arrays_reply(3, 4, payload, annotations, corr)
    assert isinstance(ours, fastwire.Gather)
    current_context.correlation_id = uuid.UUID(bytes=corr) if corr else None
    current_context.response_annotations = annotations
    try:
        theirs = protocol.SendingMessage.__mro__[1](
            protocol.MSG_RESULT, 0, 3, 4, payload, {k: bytes(v) for k, v in annotations.items()}
        )
        noted = fastwire.response_annotations_size()
    finally:
        current_context.correlation_id = None
        current_context.response_annotations = {}
    assert bytes(ours) == theirs.data
    assert noted == sum(8 + len(bytes(v)) for v in annotations.values())
    # Each array's data starts at a multiple of ALIGN into the annotations (where the
    # receiver's buffer begins).
    offset = 0
    for key, value in annotations.items():
        offset += 8
        if key.startswith("~"):
            assert offset % fastwire_wire.ALIGN == 0, (key, offset)
        offset += len(bytes(value))
    # Anything but arrays and pads: the general path.
    assert fastwire.arrays_reply(3, 4, payload, {**annotations, "XYZW": b"1"}, corr) is None
    assert fastwire.arrays_reply(3, 4, payload, {"~000": bytearray(5)}, corr) is None


def test_a_changed_message_is_counted_again():
    """The count of arrays and bytes noted after an array holds only for the dict it was
    put in, as it was: another dict (or one changed since) is counted, so keys never
    collide and alignment holds."""
    first: dict = {}
    fastwire.annotate_into(first, np.zeros(10_000))
    other = {"^000": bytes(48), "~000": memoryview(bytes(800)), "~001": memoryview(bytes(24))}
    marker = fastwire.annotate_into(other, np.zeros(10_000))
    assert marker is not None and marker["ann"] == "~002"
    first["XYZW"] = b"12345"  # added behind its back
    marker = fastwire.annotate_into(first, np.zeros(10_000))
    assert marker["ann"] == "~001"
    offset = sum(8 + len(bytes(v)) for v in list(first.values())[:-1]) + 8
    assert offset % fastwire_wire.ALIGN == 0


def test_pyroinst_installs_fast_path():
    from Pyro5 import protocol, socketutil

    assert protocol.SendingMessage is fastwire.SendingMessage
    assert socketutil.send_data is fastwire.send_data
    # The token protocol wraps the fast path's receiving (pyroinst.auth.install).
    assert protocol.recv_stub is pyroinst.auth.recv_stub
    assert pyroinst.auth._original_recv is fastwire.recv_stub


def test_too_large_response_does_not_poison_the_connection(echo, monkeypatch):
    from Pyro5 import config

    job = echo.big(N)  # 800 kB result
    assert job.wait(10)
    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", 200_000)
    with pytest.raises(pyroinst.MessageTooLarge, match="MAX_MESSAGE_SIZE"):
        echo.job_result(job.id)
    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", 1024**3)
    assert echo.echo(1) == 1  # the same connection (and server thread) works again
    assert_same(np.arange(N, dtype=np.float64), echo.job_result(job.id))


# -- every call path gets real arrays; nothing of a call is held or forwarded ----------------
def test_batch_calls_get_real_arrays(echo):
    import Pyro5.api

    arrays = [np.full(100_000, i, dtype=np.float64) for i in (1, 2, 3)]  # 800 kB each
    with Pyro5.api.BatchProxy(echo) as batch:
        for a in arrays:
            batch.upload_info(a)
        results = list(batch())
    assert [r["sum"] for r in results] == [float(a.sum()) for a in arrays]
    assert all(r["shape"] == [100_000] for r in results)


def test_oneway_call_gets_a_real_array(ns, make_server):
    import Pyro5.api

    from tests.helpers import Echo, wait_until

    device = Echo()
    make_server({"echo": device})
    proxy = Pyro5.api.Proxy(f"PYRONAME:echo@{ns.host}:{ns.port}")
    proxy._pyroOneway.add("store")
    a = np.arange(100_000, dtype=np.float64)
    proxy.store(a)
    wait_until(lambda: device.stored is not None, timeout=10)
    stored = device.stored
    assert isinstance(stored, np.ndarray) and float(stored.sum()) == float(a.sum())
    proxy._pyroRelease()


def test_nested_call_carries_only_its_own_annotations(ns, make_server):
    from tests.helpers import Echo, Relay

    srv = make_server({"echo": Echo(), "relay": Relay()})
    relay = pyroinst.connect("relay", ns.host, ns.port, owner="alice")
    seen = relay.relay(srv.uri("echo"), np.arange(200_000, dtype=np.float64))
    assert seen["arrays"] == []  # the caller's 1.6 MB upload was not re-sent
    assert "PIOW" not in seen["annotations"]  # nor its reservation owner
    relay._pyroRelease()


def test_fast_path_on_after_a_first_call_that_was_never_sent(ns, make_server, monkeypatch):
    from Pyro5 import config

    from tests.helpers import Echo

    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", config.MAX_MESSAGE_SIZE)  # restored after
    make_server({"echo": Echo()}, max_message_size=2_000_000)
    dev = pyroinst.connect("echo", ns.host, ns.port)
    with pytest.raises(pyroinst.MessageTooLarge):
        dev.upload_info(np.zeros(400_000))  # 3.2 MB: refused before sending
    a = np.arange(100_000, dtype=np.float64)
    info = dev.upload_info(a)
    assert info["keys"], "the upload did not use the fast path"
    assert_same(a, dev.echo(a))
    assert fastwire.received_array_keys(), "the reply did not use the fast path"
    dev._pyroRelease()


def test_messages_of_4_gib_or_more_are_refused_clearly(echo, monkeypatch):
    from Pyro5 import config

    monkeypatch.setattr(config, "MAX_MESSAGE_SIZE", 6 * 2**30)
    huge = np.empty(2**32 + 64, dtype=np.uint8)  # never touched: no memory used
    with pytest.raises(pyroinst.MessageTooLarge, match="4 GiB"):
        echo.upload_info(huge)
    assert echo.echo(1) == 1


@pytest.mark.parametrize("size", [2**32, 5 * 2**30])
def test_impossible_max_message_size_is_refused(ns, size):
    from pyroinst import InstServer

    with pytest.raises(pyroinst.ConfigurationError, match="max_message_size"):
        InstServer(ns_host=ns.host, ns_port=ns.port, max_message_size=size)


def test_a_large_reply_is_sent_from_the_array_itself(echo, monkeypatch):
    """The server sends a large array's memory as it is (scatter/gather), never a copy
    of it joined into one buffer (the daemon's short path uses pyroinst's messages)."""
    from Pyro5 import socketutil

    from pyroinst.sending import Gather

    sent = []
    plain = socketutil.send_data

    def recording(sock, data):
        sent.append(type(data))
        return plain(sock, data)

    monkeypatch.setattr(socketutil, "send_data", recording)
    assert echo.echo(1) == 1
    got = echo.echo(np.arange(N, dtype=np.float64))
    assert_same(np.arange(N, dtype=np.float64), got)
    assert sent.count(Gather) == 2, sent  # the request and the reply, both gathered


class _FastClient:
    """A connection whose client said in its handshake that it takes annotated arrays."""

    _pyroinst_fast = True


def _dumps_with(serializer, value, client):
    """``serializer.dumps(value)`` as a server answering ``client``: the payload and the
    response's annotations (as bytes)."""
    current_context.client = client
    current_context.response_annotations = {}
    try:
        payload = serializer.dumps(value)
        return payload, {k: bytes(v) for k, v in current_context.response_annotations.items()}
    finally:
        current_context.client = None
        current_context.response_annotations = {}


@pytest.mark.parametrize("client", [_FastClient(), None], ids=["pyroinst client", "other client"])
def test_a_stream_batch_is_encoded_as_the_same_plain_dict_would_be(client):
    """A read's answer (``ReadAnswer``) is encoded on a short path: the same payload and
    annotations as the general path makes of the same plain dict, whatever its items hold
    (large and small arrays, strided ones, dicts and lists of arrays, numpy scalars,
    datetimes)."""
    import Pyro5.serializers

    from pyroinst.buffers import ReadAnswer

    serializer = Pyro5.serializers.serializers["msgpack"]
    items = [
        np.arange(20_000.0),
        np.arange(10.0),
        np.arange(40_000.0)[::2],
        {"x": np.arange(9_000.0), "n": 3},
        1.5,
        "s",
        None,
        np.arange(10_000).astype("datetime64[ns]"),
        np.float32(2.5),
        [1, np.arange(9_000.0)],
        np.ones((100, 100)),
        np.arange(30_000, dtype=np.uint8),  # (large, but its data at an odd length)
        np.arange(9_000.0),
    ]
    answer = ReadAnswer(items=items, cursor=13, dropped=2, done=False, run="r1")
    short = _dumps_with(serializer, answer, client)
    general = _dumps_with(serializer, dict(answer), client)
    assert short == general
    assert bool(short[1]) is (client is not None)  # large arrays beside the payload
    decoded = Pyro5.serializers.serializers["msgpack"].loads(short[0]) if client is None else None
    if decoded is not None:
        assert np.array_equal(decoded["items"][0], items[0]) and decoded["cursor"] == 13


def test_a_stream_batch_of_what_cannot_be_sent_says_so():
    import Pyro5.serializers

    from pyroinst.buffers import ReadAnswer

    serializer = Pyro5.serializers.serializers["msgpack"]
    bad = ReadAnswer(items=[np.array([object()] * 9_000)], cursor=1, dropped=0, done=False)
    with pytest.raises(pyroinst.NotSerializableError, match="object"):
        _dumps_with(serializer, bad, _FastClient())

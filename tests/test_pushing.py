"""Streams with reads kept in flight: every item in order, ``dropped`` exact, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

import pyroinst
import pyroinst.device
from pyroinst.buffers import CONTINUE
from tests.test_live import Streamer, values

FRAME = 200_000  # float64 points: 1.6 MB, one frame per batch


@pytest.fixture
def cam(ns, make_server):
    driver = Streamer()
    make_server({"cam": driver}, stream_buffer_bytes=16_000_000)  # about 10 frames
    yield driver
    driver.gate.set()


@pytest.fixture
def dev(ns, cam):
    proxy = pyroinst.connect("cam", ns.host, ns.port)
    yield proxy
    proxy._pyroRelease()


@pytest.fixture
def continued(monkeypatch):
    """Counts the reads the server answered from a connection's remembered cursor."""
    seen = []
    plain = pyroinst.device.continued_cursor

    def counting(key, cursor):
        if cursor == CONTINUE:
            seen.append(key)
        return plain(key, cursor)

    monkeypatch.setattr(pyroinst.device, "continued_cursor", counting)
    return seen


def _numbered(stream) -> list[tuple[int, int]]:
    """(item number, frame value) of every item the stream yields."""
    return [(stream.number, int(frame[0])) for frame in stream]


@pytest.mark.parametrize("window", [2, 4])
def test_a_stalled_pushed_reader_gets_every_kept_item_in_order_and_dropped_exactly(
    dev, cam, continued, window
):
    job = dev.frames(60, size=FRAME, pause_at=3)
    stream = job.stream(max_items=4, window=window)
    first = [next(stream) for _ in range(2)]  # reads in flight from here on
    assert values(first) == [0, 1]
    # The reader stalls (holding its reads in flight) while the job publishes the rest:
    # the job does not wait for it.
    cam.gate.set()
    assert job.wait(30) and job.result() == 60
    rest = _numbered(stream)
    numbers = [n for n, _ in rest]
    assert all(n == v for n, v in rest)  # each item is the frame of its number
    assert numbers == sorted(set(numbers)) and numbers[-1] == 59  # in order, to the end
    received = 2 + len(rest)
    assert received + stream.dropped == 60  # what it lost is exactly what it missed
    assert stream.dropped == 60 - len(set(values(first)) | set(numbers))
    assert stream.dropped > 0  # the buffer (10 frames) overflowed while it stalled
    assert continued, "no read went on from the connection's cursor"


def test_pushed_and_one_by_one_streams_deliver_the_same(dev, cam, continued):
    job = dev.frames(40, size=1000)
    assert job.wait(30)
    pulled = values(job.stream(max_items=3, window=1))
    assert not continued  # window=1: every read names its cursor
    pushed = values(job.stream(max_items=3, window=3))
    assert pulled == pushed == list(range(40))
    assert continued


def test_a_channel_watched_with_reads_in_flight(dev, cam):
    with dev.watch("level", window=3) as watch:
        got = [next(watch) for _ in range(5)]
    levels = [value for _, value in got]
    assert levels == sorted(levels) and len(set(levels)) == 5


def test_a_server_without_continued_reads_is_read_one_batch_per_request(dev, cam, monkeypatch):
    def older(key, cursor):  # what a server before reads in flight answers
        if cursor == CONTINUE:
            raise ValueError(
                f"cursor must be 0 or more (an item number), or -1 for the next item; got {cursor}"
            )
        return cursor

    monkeypatch.setattr(pyroinst.device, "continued_cursor", older)
    job = dev.frames(30, size=1000)
    assert job.wait(30)
    stream = job.stream(max_items=4, window=4)
    assert values(stream) == list(range(30)) and stream.dropped == 0
    assert stream._pusher.window == 1


@pytest.mark.parametrize("window", [0, 9, "2", 1.5, True])
def test_a_bad_window_is_refused_clearly(dev, cam, window):
    job = dev.frames(1, size=10)
    with pytest.raises(ValueError, match="window must be a whole number from 1"):
        job.stream(window=window)
    with pytest.raises(ValueError, match="window must be a whole number from 1"):
        dev.watch("level", window=window)
    assert job.result(timeout=30) == 1  # the server serves on


def test_a_continued_read_without_a_first_one_is_refused_clearly(dev, cam):
    job = dev.frames(3, size=10)
    with pytest.raises(ValueError, match="has not read it yet"):
        dev.job_stream(job.id, CONTINUE, 0.0, 10)
    with pytest.raises(ValueError, match="-2 to go on where"):
        dev.job_stream(job.id, -3, 0.0, 10)
    answer = dev.job_stream(job.id, 0, 1.0, 10)  # the same connection, a named cursor
    assert answer["cursor"] >= 1
    more = dev.job_stream(job.id, CONTINUE, 1.0, 10)  # now it goes on from there
    assert more["cursor"] >= answer["cursor"]
    assert job.result(timeout=30) == 3
    assert isinstance(answer["items"][0], np.ndarray)


TOKEN = "pushing-token-0123456789abcdef"


@pytest.mark.parametrize("readers", [1, 4])
def test_reads_in_flight_over_tls_keep_one_connection_and_every_item(readers):
    """With the lab's token every connection is TLS, where looking for a closed
    connection reads from it: replies in flight must not be taken for one (a byte eaten
    would put the stream out of step; a reconnect per batch would cost a handshake)."""
    import threading

    from pyroinst import EmbeddedNameServer, InstServer
    from tests.helpers import lab_token

    with lab_token(TOKEN), EmbeddedNameServer("127.0.0.1", 0, token=TOKEN) as ns:
        server = InstServer(ns_host=ns.host, ns_port=ns.port, token=TOKEN, heartbeat=0)
        driver = Streamer()
        server.add_device(driver, "cam", stream_buffer_items=5000)
        with server:
            dev = pyroinst.connect("cam", ns.host, ns.port)
            job = dev.frames(600, size=10)
            stream = job.stream(max_items=7, window=3)
            got: list[list[int]] = [[] for _ in range(readers)]
            connections = set()

            def read(k: int) -> None:
                for frame in stream:
                    got[k].append(int(frame[0]))
                    connections.add(id(stream._proxy._pyroConnection))

            threads = [threading.Thread(target=read, args=(k,)) for k in range(readers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert sorted(x for part in got for x in part) == list(range(600))
            assert all(part == sorted(part) for part in got)
            connections.discard(id(None))
            assert len(connections) == 1, "a connection was made per batch"
            assert job.result(10) == 600
            pyroinst.disconnect(dev)

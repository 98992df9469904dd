"""Live data: job streams and device channels, with real name server and daemons."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import pyroinst
from pyroinst import InstServer
from tests.helpers import clean_env, run_python, wait_until


class Streamer:
    """Publishes frames from a job, values from monitors, ticks from its own thread."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.level_value = 0
        self._ticker: threading.Thread | None = None

    @pyroinst.job
    def frames(self, n: int, size: int = 1000, pause_at: int = -1) -> int:
        """Publish ``n`` frames; wait for the gate after frame ``pause_at``."""
        job = pyroinst.current_job()
        for i in range(n):
            job.publish(np.full(size, i, dtype=np.float64))
            if i == pause_at:
                assert self.gate.wait(30)
        return n

    @pyroinst.job
    def publish_unsendable(self) -> str:
        """Try to publish something that cannot be sent; say what happened."""
        job = pyroinst.current_job()
        job.publish(1)
        try:
            job.publish(object())
        except pyroinst.NotSerializableError as exc:
            job.publish(2)
            return f"refused: {exc}"
        return "accepted"

    @pyroinst.job
    def hold(self, seconds: float = 30.0) -> None:
        """Hold the device until the gate opens."""
        self.gate.wait(seconds)

    @pyroinst.monitor(period=0.05)
    def level(self) -> int:
        """A monitored counter."""
        self.level_value += 1
        return self.level_value

    @pyroinst.monitor(period=0.05)
    def flaky(self) -> float:
        """A monitored sensor that is unplugged."""
        raise RuntimeError("sensor unplugged")

    def start_ticks(self, n: int) -> None:
        """Publish ``n`` ticks on channel "ticks" from a thread of the driver."""

        def run() -> None:
            for i in range(n):
                pyroinst.publish(self, "ticks", i)
                time.sleep(0.005)

        self._ticker = threading.Thread(target=run)
        self._ticker.start()

    def close(self) -> None:
        """Stop the ticker."""
        self.gate.set()
        if self._ticker is not None:
            self._ticker.join(10)


@pytest.fixture
def cam(ns, make_server):
    """The Streamer instance served as "cam" (the test's own handle on the driver)."""
    driver = Streamer()
    make_server({"cam": driver}, stream_buffer_items=1000)
    yield driver
    driver.gate.set()


@pytest.fixture
def live(ns, cam):
    """A DeviceProxy of "cam"."""
    dev = pyroinst.connect("cam", ns.host, ns.port)
    yield dev
    dev._pyroRelease()


def values(items):
    return [int(a[0]) for a in items]


def test_stream_read_whole_in_order_while_running_and_after(live, cam):
    job = live.frames(50, pause_at=24)
    first = []
    with job.stream() as stream:
        for frame in stream:
            first.append(frame)
            if len(first) == 25:
                break
    assert job.status()["state"] == "running"  # read while the job runs
    assert values(first) == list(range(25))
    late = job.stream()  # a second reader joining late
    cam.gate.set()
    assert job.result(timeout=30) == 50
    assert values(late) == list(range(50))
    again = list(job.stream())  # after the job ended: the history
    assert values(again) == list(range(50))
    assert all(isinstance(a, np.ndarray) and a.shape == (1000,) for a in again)


def test_stream_from_latest_gets_only_new_items(live, cam):
    job = live.frames(20, pause_at=9)
    with job.stream() as early:
        assert values([next(early) for _ in range(10)]) == list(range(10))
    with job.stream(start="latest") as newest:
        cam.gate.set()
        assert values(newest) == list(range(10, 20))


def test_overflow_keeps_the_newest_and_counts_exactly(ns, make_server):
    make_server({"cam": Streamer()}, stream_buffer_items=10)
    dev = pyroinst.connect("cam", ns.host, ns.port)
    job = dev.frames(35)
    assert job.wait(30)
    with job.stream() as stream:
        got = values(stream)
    assert got == list(range(25, 35)) and stream.dropped == 25
    dev._pyroRelease()


def test_stream_bytes_bound(ns, make_server):
    make_server({"cam": Streamer()}, stream_buffer_bytes=100_000)
    dev = pyroinst.connect("cam", ns.host, ns.port)
    job = dev.frames(20, size=5000)  # 40 kB each: two fit
    assert job.wait(30)
    with job.stream() as stream:
        assert values(stream) == [18, 19] and stream.dropped == 18
    dev._pyroRelease()


def test_monitor_values_and_skipped_beats(live, cam):
    with live.watch("level") as watch:
        items = [next(watch) for _ in range(5)]
    times = [t for t, _ in items]
    assert [v for _, v in items] == list(range(items[0][1], items[0][1] + 5))
    gaps = np.diff(times)
    assert 0.02 < float(np.median(gaps)) < 0.5  # about the period (0.05 s), loosely
    job = live.hold()
    wait_until(lambda: job.status()["state"] == "running")
    before = {c["name"]: c for c in live.channels()}["level"]["skipped"]
    wait_until(lambda: {c["name"]: c for c in live.channels()}["level"]["skipped"] >= before + 3)
    cam.gate.set()
    assert job.wait(10)
    info = {c["name"]: c for c in live.channels()}["level"]
    assert info["kind"] == "monitor" and info["period"] == 0.05 and info["published"] > 5


def test_monitor_failure_is_an_error_item_and_logged_once(live, caplog):
    with live.watch("flaky", start=0) as watch:
        (_, first), (_, second) = next(watch), next(watch)
    assert isinstance(first, pyroinst.MonitorError) and first.error_type == "RuntimeError"
    assert "sensor unplugged" in str(second)
    records = caplog.get_records("setup") + caplog.get_records("call")
    logged = [r for r in records if "sensor unplugged" in r.getMessage()]
    assert len(logged) == 1


def test_publish_from_a_driver_thread_reaches_watch(live):
    with live.watch("ticks", start=0) as watch:
        live.start_ticks(20)
        got = [next(watch)[1] for _ in range(20)]
    assert got == list(range(20))
    names = {c["name"]: c for c in live.channels()}
    assert names["ticks"]["kind"] == "published" and names["ticks"]["published"] == 20


def test_publish_outside_a_server_does_nothing():
    driver = Streamer()
    pyroinst.publish(driver, "ticks", 1)  # not served: no error, nothing kept
    assert driver.frames(3) == 3  # and a job method runs as a plain method


def test_a_reader_that_vanishes_mid_poll_leaks_no_thread(live, ns):
    import Pyro5.api

    job = live.hold()  # publishes nothing
    threads_before = threading.active_count()
    proxy = Pyro5.api.Proxy(f"PYRONAME:cam@{ns.host}:{ns.port}")
    proxy._pyroTimeout = 0.3
    with pytest.raises(Pyro5.errors.TimeoutError):
        proxy.job_stream(job.id, -1, 5.0)  # the server waits up to 5 s for an item...
    proxy._pyroRelease()  # ...but the reader is gone after 0.3 s
    # The server's worker finishes the poll and returns to the pool; nothing else stays.
    wait_until(lambda: threading.active_count() <= threads_before + 1, timeout=30)
    assert live.ping()


def test_bad_inputs_are_refused_clearly_and_the_server_serves_on(live):
    with pytest.raises(pyroinst.JobNotFound):
        live.job_stream("0123456789abcdef")
    with pytest.raises(pyroinst.ChannelNotFound, match="flaky, level"):
        live.channel_read("nope")
    job = live.frames(3)
    with pytest.raises(ValueError, match="cursor"):
        live.job_stream(job.id, -2)
    with pytest.raises(ValueError, match="max_items"):
        live.job_stream(job.id, 0, 1.0, 0)
    with pytest.raises(ValueError, match="timeout"):
        live.job_stream(job.id, 0, 3600.0)
    with pytest.raises(ValueError, match="cursor"):
        live.channel_read("level", "abc")
    bad = live.publish_unsendable()
    assert "refused: " in bad.result(timeout=10) and "cannot be sent" in bad.result()
    assert list(bad.stream()) == [1, 2]  # the stream is untouched by the refused value
    assert values(job.stream()) == [0, 1, 2]


class NeedsArgument:
    """A monitor that cannot be called without arguments."""

    @pyroinst.monitor(period=1.0)
    def reading(self, channel: int) -> float:
        """Needs a channel."""
        return 0.0


class ZeroPeriod:
    """A monitor with no period."""

    @pyroinst.monitor(period=0)
    def reading(self) -> float:
        """Never due."""
        return 0.0


@pytest.mark.parametrize("driver, fragment", [(NeedsArgument, "channel"), (ZeroPeriod, "above 0")])
def test_bad_monitor_is_refused_by_add_device(ns, driver, fragment):
    server = InstServer(ns_host=ns.host, ns_port=ns.port)
    with pytest.raises(pyroinst.DeviceDefinitionError, match=fragment):
        server.add_device(driver(), "bad")
    server.stop()


_PLAIN = """
import sys
import numpy as np
import Pyro5.api
assert "pyroinst" not in sys.modules
{readme}
assert "pyroinst" not in sys.modules
assert len(frames) == 5 and all(f.shape == (100,) for f in frames), frames
assert [int(f[0]) for f in frames] == list(range(5))
assert len(readings) >= 1 and all(isinstance(v, int) for _, v in readings), readings
print("PLAIN-STREAM-OK")
"""


def readme_block(marker: str) -> str:
    from tests import docs

    return docs.block(marker)


def test_plain_pyro5_client_reads_streams_and_channels(live, ns):
    job = live.frames(5, size=100)
    assert job.wait(30)
    code = _PLAIN.format(readme=readme_block("plain-stream"))
    env = clean_env(
        PYRO_NS_HOST=ns.host, PYRO_NS_PORT=str(ns.port), JOB_ID=job.id, PYRO_SERIALIZER="msgpack"
    )
    done = run_python("-c", code, env=env)
    assert done.returncode == 0, done.stderr
    assert "PLAIN-STREAM-OK" in done.stdout


def _server(ns, port: int = 0) -> InstServer:
    server = InstServer(port=port, ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    server.shutdown_timeout = 0.5
    server.add_device(Streamer(), "cam")
    return server.start()


def test_job_stream_from_before_a_restart_ends_with_job_not_found(ns):
    server = _server(ns)
    port = int(server.location.rsplit(":", 1)[1])
    dev = pyroinst.connect("cam", ns.host, ns.port)
    try:
        stream = dev.frames(3, pause_at=0).stream()
        assert int(next(stream)[0]) == 0
        server.stop()
        server = _server(ns, port)
        with pytest.raises(pyroinst.JobNotFound, match="restarted"):
            next(stream)
        stream.close()
    finally:
        server.stop()
        dev._pyroRelease()


def test_watch_goes_on_from_the_newest_item_after_a_restart(ns):
    server = _server(ns)
    port = int(server.location.rsplit(":", 1)[1])
    dev = pyroinst.connect("cam", ns.host, ns.port)
    try:
        with dev.watch("ticks", start=0) as watch:
            dev.start_ticks(1)
            assert next(watch)[1] == 0 and watch.gaps == 0
            server.stop()
            server = _server(ns, port)
            dev.start_ticks(1000)  # on the new server: a tick every 5 ms for 5 s
            when, value = next(watch)
            assert watch.gaps == 1 and isinstance(value, int)
    finally:
        server.stop()
        dev._pyroRelease()


def test_buffer_batches_are_bounded_in_bytes():
    from pyroinst.buffers import MAX_BATCH_BYTES, StreamBuffer

    buf = StreamBuffer()
    frame = np.zeros(MAX_BATCH_BYTES // 8 // 4)  # a quarter of a batch
    for _ in range(10):
        buf.publish(frame)
    first = buf.read(0, 0, 1000)
    assert len(first["items"]) == 4 and first["cursor"] == 4 and not first["done"]
    buf.close()
    rest = buf.read(4, 0, 1000)
    assert len(rest["items"]) == 4 and not rest["done"]
    last = buf.read(8, 0, 1000)
    assert len(last["items"]) == 2 and last["done"]
    big = StreamBuffer()
    big.publish(np.zeros(MAX_BATCH_BYTES // 4))  # twice a batch: still sent, alone
    assert len(big.read(0, 0, 10)["items"]) == 1


def test_streams_stay_open_to_everyone_while_reserved(live, ns):
    job = live.frames(3)
    assert job.wait(10)
    live.reserve("alice", 60)
    try:
        other = pyroinst.connect("cam", ns.host, ns.port, owner="bob")
        with pytest.raises(pyroinst.DeviceReserved):
            other.frames(1)
        assert values(other.job_stream(job.id)["items"]) == [0, 1, 2]
        assert other.channel_read("level", 0, 1.0, 5)["items"]
        assert {c["name"] for c in other.channels()} >= {"level", "flaky"}
        other._pyroRelease()
    finally:
        live.release()


def test_stream_buffer_settings_in_a_lab_file(tmp_path):
    from pyroinst.config import load_lab

    lab = tmp_path / "lab.toml"
    lab.write_text(
        "[server]\nstream_buffer_items = 500\nstream_buffer_bytes = 1000000\n"
        '[devices.cam]\nclass = "tests.test_live:Streamer"\nstream_buffer_items = 20\n'
    )
    config = load_lab(lab)
    assert config.server["stream_buffer_items"] == 500
    assert config.devices[0].stream_buffer_items == 20
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nstream_buffer_items = "many"\n')
    with pytest.raises(pyroinst.ConfigurationError, match="stream_buffer_items"):
        load_lab(bad)
    with pytest.raises(pyroinst.ConfigurationError, match="stream_buffer_items"):
        InstServer(stream_buffer_items=0)


def test_a_waiting_read_is_answered_by_the_thread_that_publishes(live):
    """Items that come a few ms apart find their read waiting on the server; the thread
    that publishes each sends it at once (pyroinst.direct: one wake-up fewer), and the
    reader gets every item, in order, its cursor going on as before."""
    from pyroinst import direct

    before = direct.answered
    with live.watch("ticks", start=0) as watch:
        live.start_ticks(20)
        got = [next(watch)[1] for _ in range(20)]
        assert watch.cursor == 20
    assert got == list(range(20))
    assert direct.answered > before
    # A job's stream, read after the items came: its reads are answered as before.
    job = live.frames(5, size=100)
    assert values(job.stream()) == list(range(5))


def test_an_answer_the_socket_cannot_take_is_left_to_the_serving_thread():
    """The publishing thread never waits on a reader's socket: a full one takes nothing,
    and the serving thread sends the answer; one with room gets the very message the
    serving thread would have sent."""
    import socket

    import Pyro5.serializers
    from Pyro5 import protocol

    from pyroinst import direct
    from pyroinst.buffers import ReadAnswer

    class Conn:
        def __init__(self, sock):
            self.sock = sock

    serializer = Pyro5.serializers.serializers["msgpack"]

    def finish(answer):
        answer["run"] = "r1"
        return answer

    a, b = socket.socketpair()
    with a, b:
        answerer = direct.Answerer(Conn(a), 7, serializer, None, finish)
        assert answerer.deliver(ReadAnswer(items=[1.5], cursor=4, dropped=0, done=False))
        answerer.send_rest()
        header = b.recv(protocol._header_size, socket.MSG_WAITALL)
        msg = protocol.ReceivingMessage(header)
        assert (msg.type, msg.seq) == (protocol.MSG_RESULT, 7)
        payload = b.recv(msg.data_size, socket.MSG_WAITALL)
        assert serializer.loads(payload) == {
            "items": [1.5],
            "cursor": 4,
            "dropped": 0,
            "done": False,
            "run": "r1",
        }
        a.setblocking(False)
        try:
            while True:
                a.send(b"x" * 65536)
        except BlockingIOError:
            pass
        a.setblocking(True)
        full = direct.Answerer(Conn(a), 8, serializer, None, finish)
        assert not full.deliver(ReadAnswer(items=[2.5], cursor=5, dropped=0, done=False))
        assert not full.sent

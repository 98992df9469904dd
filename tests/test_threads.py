"""A proxy from connect() belongs to no thread: threads, thread pools and asyncio.to_thread
use it at once, over one connection per using thread, bounded and released."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import numpy as np
import pytest

import pyroinst
from tests.helpers import counted_nap, wait_until


class Parallel:
    """Answers from several connections at once (no device lock)."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self._lock = threading.Lock()

    @pyroinst.concurrent
    def echo_after(self, value: int, seconds: float) -> int:
        """``value`` after ``seconds``, counting how many calls are inside at once."""
        counted_nap(self, seconds)
        return value

    def square(self, value: int) -> int:
        """``value`` squared."""
        return value * value

    @pyroinst.job
    def ramp(self, n: int) -> int:
        """Publishes 0..n-1, one item at a time."""
        for i in range(n):
            pyroinst.current_job().publish(i)
        return n


@pytest.fixture(scope="module")
def lab():
    ns = pyroinst.EmbeddedNameServer("127.0.0.1", 0).start()
    device = Parallel()
    server = pyroinst.InstServer(host="127.0.0.1", port=0, ns_host=ns.host, ns_port=ns.port)
    server.add_device(device, "par")
    server.start()
    yield ns, server, device
    server.stop()
    ns.stop()


def held(server) -> int:
    """Connections the server holds from 127.0.0.1 now (its own count)."""
    return server._daemon._pyroinst_admission.held.get("127.0.0.1", 0)


def connect(lab, **options):
    ns = lab[0]
    return pyroinst.connect("par", ns.host, ns.port, **options)


def test_one_proxy_eight_threads_at_once(lab):
    _, server, device = lab
    dev = connect(lab)
    assert dev.square(3) == 9  # made and first used in this thread
    before = held(server)
    start = threading.Barrier(8)
    answers: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            start.wait(10)
            answers[k] = [dev.echo_after(k * 100 + i, 0.05) for i in range(5)]
            answers[k] += [dev.square(k)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    # While they run: one connection per thread, no more.
    wait_until(lambda: device.most >= 2, timeout=10)
    assert dev._pyroinst_conns.open_connections() <= 9
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    for k in range(8):
        assert answers[k] == [k * 100 + i for i in range(5)] + [k * k]
    assert device.most >= 2  # calls were inside the device at the same time
    # The threads are gone: so are their connections, on the server too.
    del threads
    wait_until(lambda: dev._pyroinst_conns.open_connections() == 1, timeout=10)
    wait_until(lambda: held(server) <= before, timeout=10)
    assert dev.square(4) == 16  # the main thread's connection is still there
    pyroinst.disconnect(dev)
    wait_until(lambda: held(server) <= before - 1, timeout=10)
    assert dev.square(5) == 25  # and comes back when used


def test_asyncio_to_thread_and_a_thread_pool(lab):
    _, server, _ = lab
    dev = connect(lab)
    assert dev.square(1) == 1  # this thread's connection (`dev.square` needs the metadata)
    before = held(server)

    async def main() -> list[int]:
        return await asyncio.gather(*(asyncio.to_thread(dev.square, i) for i in range(20)))

    assert asyncio.run(main()) == [i * i for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(dev.square, range(40))) == [i * i for i in range(40)]
        # Bounded by the threads that used it: four pool threads (plus what asyncio's
        # default pool still holds until its threads end).
        assert dev._pyroinst_conns.open_connections() <= 1 + 4 + 20
    wait_until(lambda: dev._pyroinst_conns.open_connections() == 1, timeout=10)
    wait_until(lambda: held(server) <= before, timeout=10)


def test_more_threads_than_max_connections_share_them(lab):
    dev = connect(lab, max_connections=2)
    seen = []
    lock = threading.Lock()

    def work(k: int) -> None:
        value = dev.square(k)
        with lock:
            seen.append((value, dev._pyroinst_conns.open_connections()))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(10)]
    for thread in threads:
        thread.start()
        thread.join(10)  # one after the other: each takes over an idle connection
    assert sorted(v for v, _ in seen) == sorted(k * k for k in range(10))
    assert max(n for _, n in seen) <= 2
    pyroinst.disconnect(dev)


def test_all_connections_busy_is_a_clear_error(lab):
    dev = connect(lab, max_connections=1, reconnect_timeout=0.3)
    inside = threading.Event()
    result: list[int] = []

    def long_call() -> None:
        inside.set()
        result.append(dev.echo_after(7, 1.5))

    worker = threading.Thread(target=long_call)
    worker.start()
    try:
        inside.wait(5)
        wait_until(lambda: dev._pyroinst_conns.open_connections() == 1, timeout=5)
        with pytest.raises(pyroinst.ClientBusy) as caught:
            dev.square(2)
        assert "max_connections" in str(caught.value)
    finally:
        worker.join(10)
    assert result == [7]
    assert dev.square(3) == 9  # free again
    pyroinst.disconnect(dev)


def test_a_stream_read_by_several_threads_delivers_each_item_once(lab):
    dev = connect(lab)
    job = dev.ramp(2000)
    stream = job.stream(max_items=7)
    got: list[list[int]] = [[] for _ in range(4)]

    def read(k: int) -> None:
        for item in stream:
            got[k].append(item)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    everything = sorted(x for part in got for x in part)
    assert everything == list(range(2000))
    for part in got:
        assert part == sorted(part)  # in order within each reader
    assert job.result(10) == 2000
    pyroinst.disconnect(dev)


def test_a_handle_from_one_thread_used_in_another(lab):
    dev = connect(lab)
    job = dev.ramp(10)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert pool.submit(job.result, 10).result(20) == 10
        assert pool.submit(lambda: list(job.stream())).result(20) == list(range(10))
    assert np.array_equal(job.result(), 10)
    pyroinst.disconnect(dev)


def test_plain_pyro5_proxies_keep_their_owner_rule(lab):
    import Pyro5.api
    import Pyro5.errors

    _, server, _ = lab
    proxy = Pyro5.api.Proxy(server.uri("par"))
    assert proxy.square(2) == 4
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with pytest.raises(Pyro5.errors.PyroError, match="not the owner"):
            pool.submit(proxy.square, 3).result(10)
    proxy._pyroRelease()


def test_help_comes_from_describe(lab):
    import inspect

    dev = connect(lab)
    assert "square" in dir(dev)  # tab completion, before any call
    assert str(inspect.signature(dev.square)) == "(value: int) -> int"
    assert dev.square.__doc__ == "``value`` squared."
    assert "Publishes 0..n-1" in dev.ramp.__doc__ and "JobHandle" in dev.ramp.__doc__
    text = repr(dev)
    assert "'par'" in text and dev._pyroUri.location in text and "connection" in text
    shown: list[str] = []
    printer = type("Printer", (), {"text": lambda self, part: shown.append(part)})()
    dev._repr_pretty_(printer, False)  # IPython's display: the description under the repr
    assert shown[0].startswith(text) and "square" in shown[0]
    assert "square" in dev._repr_html_()
    job = dev.ramp(3)
    job.wait(10)
    assert "state='done'" in repr(job) and "progress=" in repr(job)
    pyroinst.disconnect(dev)

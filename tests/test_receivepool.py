"""Warm receive buffers: large arrays arrive in pooled buffers, returned when freed."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys

import numpy as np
import pytest

import pyroinst
from pyroinst.receivepool import MIN_POOLED, ReceivePool, receive_pool
from tests.helpers import clean_env

N = 2 * MIN_POOLED // 8  # points: a message well above the pool's threshold


@pytest.fixture
def dev(echo):
    pool = receive_pool()
    limit = pool.limit
    pool.limit = 64 << 20
    pool.clear()
    yield echo
    pool.limit = limit
    pool.clear()


def _fetch(dev, n: int) -> np.ndarray:
    """``n`` points from the device: a job's result, received by this process."""
    return dev.big(n).result()


def _span(a: np.ndarray) -> tuple[int, int]:
    return a.ctypes.data, a.ctypes.data + a.nbytes


def test_a_freed_array_returns_its_buffer_and_the_next_message_reuses_it(dev):
    pool = receive_pool()
    first = _fetch(dev, N)
    assert pool.is_lent(first)
    where = first.ctypes.data
    before = pool.stats()
    assert before["in_use"] == 1 and before["idle"] == 0
    del first
    gc.collect()
    returned = pool.stats()
    assert returned["returned"] == before["returned"] + 1
    assert returned["in_use"] == 0 and returned["idle"] == 1
    second = _fetch(dev, N)
    after = pool.stats()
    assert after["reused"] == before["reused"] + 1
    assert after["made"] == before["made"]  # no new buffer
    assert second.ctypes.data == where  # the same memory, warm
    assert np.array_equal(second, np.arange(N, dtype=np.float64))


def test_a_kept_array_keeps_its_buffer_out_of_the_pool(dev):
    pool = receive_pool()
    kept = _fetch(dev, N)
    view = kept[10:20]  # a view alone keeps it too
    del kept
    gc.collect()
    assert pool.stats()["in_use"] == 1 and pool.stats()["idle"] == 0
    assert pool.is_lent(view)
    other = _fetch(dev, N)
    # Two live arrays never share a buffer: the second message got memory of its own.
    a, b = _span(view), _span(other)
    assert a[1] <= b[0] or b[1] <= a[0]
    assert pool.stats()["in_use"] == 2
    assert np.array_equal(view, np.arange(10, 20, dtype=np.float64))  # untouched
    del view, other
    gc.collect()
    assert pool.stats()["in_use"] == 0 and pool.stats()["idle"] == 2


def test_many_transfers_with_some_kept_never_overlap(dev):
    pool = receive_pool()
    kept = []
    for i in range(12):
        a = _fetch(dev, N + i)  # sizes within 2x: any idle buffer fits
        for k in kept:
            x, y = _span(k), _span(a)
            assert x[1] <= y[0] or y[1] <= x[0], "a lent buffer was lent again"
        if i % 3 == 0:
            kept.append(a)
        del a
        gc.collect()
    for i, k in enumerate(kept):
        assert np.array_equal(k, np.arange(N + 3 * i, dtype=np.float64))
    stats = pool.stats()
    assert stats["in_use"] == len(kept)
    assert stats["reused"] >= 12 - len(kept) - 1


def test_the_idle_bound_frees_the_buffers_idle_longest(dev):
    pool = receive_pool()
    pool.limit = 3 * MIN_POOLED  # room for one idle 2 MiB buffer
    arrays = [_fetch(dev, N), _fetch(dev, N)]
    del arrays
    gc.collect()
    stats = pool.stats()
    assert stats["idle"] == 1 and stats["idle_bytes"] <= pool.limit
    assert stats["dropped"] >= 1
    pool.limit = 0  # off: fresh memory, nothing kept
    a = _fetch(dev, N)
    assert not pool.is_lent(a)
    assert np.array_equal(a, np.arange(N, dtype=np.float64))


def test_small_messages_do_not_use_the_pool(dev):
    pool = receive_pool()
    small = _fetch(dev, 1000)
    assert not pool.is_lent(small)
    assert pool.stats()["lent"] == 0 or pool.stats()["in_use"] == 0


def test_the_server_receives_uploads_into_the_pool_too(dev):
    a = np.arange(N, dtype=np.float64)
    assert dev.upload_info(a)["sum"] == float(a.sum())
    # The server is in this process: its received argument went back once the call ended.
    gc.collect()
    assert receive_pool().stats()["returned"] >= 1


def test_a_pool_of_its_own_lends_and_takes_back():
    pool = ReceivePool(8 << 20)
    view = pool.lend(MIN_POOLED + 100_000)
    view[:4] = b"abcd"
    assert pool.is_lent(np.frombuffer(view, np.uint8))
    del view
    gc.collect()
    assert pool.stats()["idle"] == 1
    again = pool.lend(MIN_POOLED)  # it fits, within 2x: the same buffer
    assert pool.stats()["reused"] == 1 and bytes(again[:4]) == b"abcd"


@pytest.mark.parametrize("value", ["lots", "-5M"])
def test_a_bad_pool_setting_is_named_and_the_default_used(value):
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "from pyroinst.receivepool import receive_pool, DEFAULT_LIMIT\n"
        "assert receive_pool().limit == DEFAULT_LIMIT\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(PYROINST_RECEIVE_POOL=value),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PYROINST_RECEIVE_POOL" in proc.stderr and "not a size" in proc.stderr


def test_a_size_setting_with_a_suffix_is_understood():
    code = "from pyroinst.receivepool import receive_pool; print(receive_pool().limit)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(PYROINST_RECEIVE_POOL="32M"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == str(32 << 20), proc.stderr


def test_the_pool_is_public():
    assert pyroinst.receive_pool() is receive_pool()
    logging.getLogger(__name__).debug("%s", receive_pool().stats())

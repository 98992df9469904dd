"""Warm receive buffers: large messages land in memory that was used before.

Receiving a large array into fresh memory costs the kernel a page fault (and zeroing) per
page; on a virtual machine that hands freed memory back to its host after a short idle,
every transfer after a pause pays it again (an 80 MB array: several times slower the first
time). So large messages are received into buffers from a bounded pool: a buffer is lent
to one message, its arrays wrap it, and when the last array (or view) on it is freed the
buffer goes back to the pool for the next large message, still faulted in.

* Only messages of at least ``MIN_POOLED`` bytes use the pool; smaller ones come from
  numpy's allocator as before.
* ``PYROINST_RECEIVE_POOL`` (bytes; suffixes K, M, G; ``0`` turns the pool off), default
  256M, bounds what the pool keeps *idle*; buffers in use by arrays are the program's
  working set and are not counted. A returned buffer that would take the idle total past
  the bound pushes out the buffers idle longest (their memory is freed).
* A buffer is lent to one message at a time: while any array on it lives, it is not in
  the pool (a client that keeps a result keeps its buffer). A lent buffer is at most
  twice the message's size, so a small message never pins a huge buffer.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import weakref
from typing import Any

import numpy as np

__all__ = ["ReceivePool", "receive_pool", "MIN_POOLED", "DEFAULT_LIMIT"]

log = logging.getLogger(__name__)

#: Messages smaller than this are received into fresh memory (malloc keeps it warm).
MIN_POOLED = 1 << 20
#: What the pool keeps idle unless PYROINST_RECEIVE_POOL says otherwise.
DEFAULT_LIMIT = 256 << 20
#: Buffers are sized in these steps, so similar messages share buffers.
_STEP = 1 << 16


def _parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    if scale != 1:
        text = text[:-1]
    value = int(float(text) * scale)
    if value < 0:
        raise ValueError("negative")
    return value


class _Loan:
    """The owner of one lent buffer: numpy arrays made on it keep it alive, and its end
    (the last array gone) sends the buffer back to the pool."""

    __slots__ = ("__array_interface__", "block", "__weakref__")

    def __init__(self, block: np.ndarray, size: int) -> None:
        self.block = block
        self.__array_interface__ = {
            "shape": (size,),
            "typestr": "|u1",
            "data": (block.ctypes.data, False),
            "version": 3,
        }


class ReceivePool:
    """A bounded pool of receive buffers (see the module's docstring).

    ``limit`` is the number of idle bytes it may keep (0: no pool). ``stats()`` tells what
    it did: buffers made, lent, reused, returned, dropped, and what it holds idle.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._lock = threading.Lock()
        self._idle: list[np.ndarray] = []  # oldest first
        self._idle_bytes = 0
        # Finalizers run wherever the garbage collector does, perhaps inside lend() on this
        # very thread: they only append here (atomic), and lend()/stats() take them in.
        self._returned: collections.deque[np.ndarray] = collections.deque()
        self._lent_ids: set[int] = set()
        self.limit = int(limit)
        self._counts = dict.fromkeys(("made", "lent", "reused", "returned", "dropped"), 0)

    def lend(self, size: int) -> memoryview:
        """A writeable buffer of ``size`` bytes, from the pool if one fits (see module)."""
        if size < MIN_POOLED or self.limit <= 0:
            return memoryview(np.empty(size, dtype=np.uint8))
        with self._lock:
            self._take_returned()
            block = None
            best = None
            for i, candidate in enumerate(self._idle):
                if size <= candidate.nbytes <= 2 * size and (
                    best is None or candidate.nbytes < self._idle[best].nbytes
                ):
                    best = i
            if best is not None:
                block = self._idle.pop(best)
                self._idle_bytes -= block.nbytes
                self._counts["reused"] += 1
            self._counts["lent"] += 1
        if block is None:
            block = np.empty(-(-size // _STEP) * _STEP, dtype=np.uint8)
            with self._lock:
                self._counts["made"] += 1
        loan = _Loan(block, size)
        with self._lock:
            self._lent_ids.add(id(block))
        weakref.finalize(loan, self._give_back, block)
        return memoryview(np.asarray(loan))

    def _give_back(self, block: np.ndarray) -> None:
        """A loan ended (its last array is gone): the buffer goes back now, or, if this
        thread or another holds the lock, with the holder's next step."""
        self._returned.append(block)
        while self._returned and self._lock.acquire(blocking=False):
            try:
                self._take_returned()
            finally:
                self._lock.release()

    def _take_returned(self) -> None:
        """Put returned buffers in the pool, pushing out the idle-longest beyond the limit."""
        while self._returned:
            block = self._returned.popleft()
            self._lent_ids.discard(id(block))
            self._counts["returned"] += 1
            if block.nbytes > self.limit:
                self._counts["dropped"] += 1
                continue
            self._idle.append(block)
            self._idle_bytes += block.nbytes
        while self._idle_bytes > self.limit and self._idle:
            old = self._idle.pop(0)
            self._idle_bytes -= old.nbytes
            self._counts["dropped"] += 1

    def is_lent(self, buffer: Any) -> bool:
        """True if ``buffer`` (an array received from the pool, or its memory) is lent now."""
        base = buffer
        while base is not None and not isinstance(base, _Loan):
            nxt = getattr(base, "base", None)
            base = getattr(base, "obj", None) if nxt is None else nxt
        return isinstance(base, _Loan) and id(base.block) in self._lent_ids

    def clear(self) -> None:
        """Free every idle buffer (lent ones come back later and are kept as usual)."""
        with self._lock:
            self._take_returned()
            self._counts["dropped"] += len(self._idle)
            self._idle.clear()
            self._idle_bytes = 0

    def stats(self) -> dict[str, int]:
        """Counts so far (made, lent, reused, returned, dropped), buffers lent now
        (``in_use``), and the idle buffers' number and bytes."""
        with self._lock:
            self._take_returned()
            return {
                **self._counts,
                "in_use": len(self._lent_ids),
                "idle": len(self._idle),
                "idle_bytes": self._idle_bytes,
                "limit": self.limit,
            }


def _configured_limit() -> int:
    text = os.environ.get("PYROINST_RECEIVE_POOL", "").strip()
    if not text:
        return DEFAULT_LIMIT
    try:
        return _parse_size(text)
    except (ValueError, IndexError):
        log.warning(
            "PYROINST_RECEIVE_POOL=%r is not a size (bytes, or with K/M/G); using %d",
            text,
            DEFAULT_LIMIT,
        )
        return DEFAULT_LIMIT


_pool = ReceivePool(_configured_limit())


def receive_pool() -> ReceivePool:
    """The process's pool of receive buffers (set its ``limit`` to resize it; 0: off)."""
    return _pool

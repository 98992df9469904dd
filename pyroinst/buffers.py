"""Bounded buffers of published items, read by cursor with a long poll (server side).

A job's stream and a device channel each have one ``StreamBuffer``. Publishing appends
an item and never blocks: when the buffer holds more than ``max_items`` items or
``max_bytes`` bytes, the oldest items go. Readers keep no state on the server: each read
says "everything from cursor C", waits up to ``timeout`` seconds for a first item, and
gets back the items, the next cursor and how many items it missed because they had been
dropped before it read them. Memory therefore depends on the buffer's bounds only, never
on the number of readers or on a reader that stopped reading.

Cursors are item numbers: the first item ever published is 0. Cursor -1 means "the next
item published" (whatever the buffer holds now is skipped). A cursor beyond the end means
"from that item on": the read waits until it is published (items before it are skipped).

What a buffer counts against ``max_bytes`` is the memory its items keep alive, not their
size on the wire: an array that is a view of a larger one (``frame[::4, ::4]``) keeps
the whole base array, so the base counts; items that share one base (frames of a
driver's buffer pool) count it once, for as long as any of them is kept
(``memory_parts``). Job results are counted the same way (``result_nbytes``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import sys
import threading
import time
from typing import Any

import numpy as np
from Pyro5.callcontext import current_context

from .direct import DIRECT_AFTER, DIRECT_MAX_BYTES, DIRECT_PER_PUBLISH

__all__ = [
    "StreamBuffer",
    "ReadAnswer",
    "Delivered",
    "DEFAULT_ITEMS",
    "DEFAULT_BYTES",
    "MAX_POLL",
    "MAX_BATCH",
    "check_read",
    "CONTINUE",
    "continued_cursor",
    "remember_cursor",
    "result_nbytes",
    "memory_parts",
]

log = logging.getLogger(__name__)

#: Items a buffer keeps by default (stream_buffer_items).
DEFAULT_ITEMS = 10_000
#: Bytes a buffer keeps by default (stream_buffer_bytes).
DEFAULT_BYTES = 256 * 2**20
#: The longest a read may wait for a first item, in seconds.
MAX_POLL = 30.0
#: The most items one read may ask for.
MAX_BATCH = 100_000
#: A read returns items up to about this many bytes (at least one item): a batch costs
#: both sides a fixed amount of Python (a request, its answer), so 1 MiB frames stream
#: 5 % faster in batches of 4 MiB than of 2 (docs/performance.md); 8 MiB is slower
#: again, and a huge batch would only make the reader wait for the whole of it.
MAX_BATCH_BYTES = 4 * 2**20


#: A read's cursor meaning "where this connection's last read of this stream ended": a
#: reader keeps several reads in flight on its connection, the server answers them in order.
CONTINUE = -2
#: Streams a connection remembers a cursor for (the oldest forgotten beyond).
MAX_CONTINUED = 16

_SMALL = frozenset({int, float, bool, type(None), complex})


def _owner(a: np.ndarray) -> tuple[Any, int]:
    """The object whose memory the array ``a`` keeps alive, and its size in bytes."""
    owner: Any = a
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    if isinstance(owner, np.ndarray):
        return owner, int(owner.nbytes)
    try:
        return owner, max(int(a.nbytes), memoryview(owner).nbytes)
    except TypeError:  # a base without a buffer of its own (mmap and the like: as seen)
        return owner, int(a.nbytes)


def memory_parts(value: Any) -> tuple[int, list[tuple[int, Any, int]]]:
    """The memory a value keeps alive: ``(bytes of its own, arrays' owners)``, each owner
    as ``(id, owner, bytes)`` (one entry per owner, however many arrays share it)."""
    t = type(value)
    if t in _SMALL:
        return 32, []
    if t is np.ndarray:
        if value.base is None:
            return 0, [(id(value), value, int(value.nbytes))]
        owner, size = _owner(value)
        return 0, [(id(owner), owner, size)]
    own = 0
    owners: dict[int, tuple[int, Any, int]] = {}
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, np.ndarray):
            owner, size = _owner(item)
            owners.setdefault(id(owner), (id(owner), owner, size))
        elif depth < 32 and isinstance(item, dict):
            own += sys.getsizeof(item)
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif depth < 32 and isinstance(item, list | tuple | set | frozenset):
            own += sys.getsizeof(item)
            stack.extend((v, depth + 1) for v in item)
        else:
            own += result_nbytes(item)
    return own, list(owners.values())


class ReadAnswer(dict):
    """A read's answer: ``{"items", "cursor", "dropped", "done"}`` (and a device adds
    ``"run"``). A plain dict to everyone; its type tells pyroinst's msgpack serializer that
    only ``items`` can hold anything but numbers, booleans and strings, so it encodes the
    answer on a short path (``pyroinst.serialization``)."""

    __slots__ = ()


def held_nbytes(value: Any) -> int:
    """The memory a value keeps alive (views count their base array, shared bases once)."""
    own, owners = memory_parts(value)
    return own + sum(size for _, _, size in owners)


def result_nbytes(value: Any) -> int:
    """Approximate size of a value on the wire (a published item's batch share)."""
    t = type(value)
    if t in _SMALL:
        return 32
    if t is dict and len(value) <= 8:
        return sys.getsizeof(value) + sum(
            32 if type(v) in _SMALL else result_nbytes(v) for v in value.values()
        )
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(
            result_nbytes(k) + result_nbytes(v) for k, v in value.items()
        )
    if isinstance(value, list | tuple | set | frozenset):
        return sys.getsizeof(value) + sum(result_nbytes(v) for v in value)
    return sys.getsizeof(value)


def check_read(cursor: Any, timeout: Any, max_items: Any) -> tuple[int, float, int]:
    """A read's arguments as numbers, or ValueError saying what is wrong with them."""
    try:
        cursor, timeout, max_items = int(cursor), float(timeout), int(max_items)
    except (TypeError, ValueError):
        raise ValueError(
            f"cursor must be a whole number, timeout a number of seconds and max_items a "
            f"whole number; got cursor={cursor!r}, timeout={timeout!r}, max_items={max_items!r}"
        ) from None
    if cursor < CONTINUE:
        raise ValueError(
            f"cursor must be 0 or more (an item number), -1 for the next item, or -2 to go "
            f"on where this connection's last read ended; got {cursor}"
        )
    if not 0 <= timeout <= MAX_POLL:
        raise ValueError(f"timeout must be between 0 and {MAX_POLL:g} s; got {timeout:g}")
    if not 1 <= max_items <= MAX_BATCH:
        raise ValueError(f"max_items must be between 1 and {MAX_BATCH}; got {max_items}")
    return cursor, timeout, max_items


def continued_cursor(key: str, cursor: int) -> int:
    """The cursor a read starts at: ``cursor``, or for CONTINUE where the last read of
    ``key`` on this connection ended (ValueError if there was none)."""
    if cursor != CONTINUE:
        return cursor
    remembered = getattr(current_context.client, "_pyroinst_cursors", {}).get(key)
    if remembered is None:
        raise ValueError(
            "cursor -2 goes on where this connection's last read of the stream ended, and "
            "this connection has not read it yet: start with an item number or -1"
        )
    return remembered


def remember_cursor(key: str, cursor: int) -> None:
    """Note where this connection's read of ``key`` ended (for a CONTINUE read)."""
    conn = current_context.client
    if conn is None:
        return
    cursors = getattr(conn, "_pyroinst_cursors", None)
    if cursors is None:
        cursors = conn._pyroinst_cursors = {}
    cursors.pop(key, None)
    cursors[key] = cursor
    if len(cursors) > MAX_CONTINUED:
        del cursors[next(iter(cursors))]


class _Waiting:
    """A read waiting for item ``cursor`` that the publishing thread may answer."""

    __slots__ = ("cursor", "answerer", "answer", "state", "sent")

    def __init__(self, cursor: int, answerer: Any) -> None:
        self.cursor = cursor
        self.answerer = answerer
        self.answer: ReadAnswer | None = None
        self.state = 0  # 0 waiting, 1 taken by a publish (being sent), 2 done
        self.sent = False


class Delivered:
    """What ``read`` returns when the publishing thread sent the answer (``answer``)."""

    __slots__ = ("answer",)

    def __init__(self, answer: ReadAnswer) -> None:
        self.answer = answer


class StreamBuffer:
    """Items in publish order, the oldest dropped beyond ``max_items`` or ``max_bytes``."""

    def __init__(self, max_items: int = DEFAULT_ITEMS, max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_items = max(1, int(max_items))
        self.max_bytes = max(1, int(max_bytes))
        # (value, size on the wire, own bytes, ids of the array owners it holds)
        self._direct: list[_Waiting] = []  # reads a publish may answer itself
        self._items: collections.deque[tuple[Any, int, int, tuple[int, ...]]] = collections.deque()
        # id -> [owner, items holding it, bytes]: memory shared by items counts once.
        self._owners: dict[int, list[Any]] = {}
        self._first = 0  # item number of the oldest item kept
        self._bytes = 0
        self._closed = False
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # readers waiting now (counted under the lock)
        #: Items published so far (dropped ones included).
        self.published = 0
        #: When the last item was published (epoch seconds), or None.
        self.last_time: float | None = None

    @property
    def nbytes(self) -> int:
        """Bytes the kept items hold (approximately)."""
        return self._bytes

    @property
    def closed(self) -> bool:
        """True once no more items will come (a finished job's stream)."""
        return self._closed

    def publish(self, value: Any, nbytes: int | None = None) -> int:
        """Append ``value`` (never blocks, never copies); its item number."""
        size = result_nbytes(value) if nbytes is None else nbytes
        own, parts = memory_parts(value)
        with self._lock:  # the condition's own lock: entered in C, not through Condition
            items = self._items
            owners = self._owners
            keys = []
            held = own
            for key, owner, part in parts:
                entry = owners.get(key)
                if entry is None:
                    owners[key] = [owner, 1, part]
                    held += part
                else:
                    entry[1] += 1
                keys.append(key)
            items.append((value, size, own, tuple(keys)))
            self._bytes += held
            number = self._first + len(items) - 1
            if len(items) > self.max_items or self._bytes > self.max_bytes:
                # The newest item always stays, even when it alone is over the byte bound.
                while len(items) > 1 and (
                    len(items) > self.max_items or self._bytes > self.max_bytes
                ):
                    _, _, dropped_own, dropped_keys = items.popleft()
                    self._bytes -= dropped_own
                    for key in dropped_keys:
                        entry = owners[key]
                        entry[1] -= 1
                        if not entry[1]:
                            self._bytes -= entry[2]
                            del owners[key]
                    self._first += 1
            self.published += 1
            self.last_time = time.time()
            taken = self._take_waiting(number, value, size) if self._direct else None
            if self._waiting and not taken:
                self._cond.notify_all()
        if taken:
            # Sent from this thread before the serving threads wake (pyroinst.direct).
            for waiting in taken:
                try:
                    waiting.sent = waiting.answerer.deliver(waiting.answer)
                except Exception:  # noqa: BLE001 - its serving thread answers instead
                    log.debug("a waiting read not answered from the publisher", exc_info=True)
                finally:
                    waiting.state = 2
            with self._cond:
                self._cond.notify_all()
        return number

    def _take_waiting(self, number: int, value: Any, size: int) -> list[_Waiting]:
        """The waiting reads item ``number`` answers alone, each given its answer (at most
        DIRECT_PER_PUBLISH, a small item only; the lock held)."""
        if size > DIRECT_MAX_BYTES:
            return []
        taken, kept = [], []
        for waiting in self._direct:
            if waiting.cursor == number and len(taken) < DIRECT_PER_PUBLISH:
                waiting.state = 1
                waiting.answer = ReadAnswer(items=[value], cursor=number + 1, dropped=0, done=False)
                taken.append(waiting)
            else:
                kept.append(waiting)
        self._direct = kept
        return taken

    def close(self) -> None:
        """No more items: readers that reach the end are told ``done``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(
        self, cursor: int, timeout: float, max_items: int, answerer: Any = None
    ) -> ReadAnswer | Delivered:
        """Items from ``cursor`` on, waiting up to ``timeout`` s for the first one.

        Returns ``{"items", "cursor", "dropped", "done"}``: ``cursor`` is where the next
        read starts, ``dropped`` how many items from ``cursor`` on were gone before this
        read, ``done`` True once the buffer is closed and every kept item was read.

        With an ``answerer`` (``pyroinst.direct``), a read that has waited DIRECT_AFTER
        may be answered by the thread that publishes its item: then it returns
        ``Delivered`` (the answer was sent), or the answer that thread could not send.
        """
        now = time.monotonic()
        deadline = now + timeout
        direct_from = now + DIRECT_AFTER if answerer is not None else None
        waiting = None
        with self._cond:
            if cursor < 0:
                cursor = self._first + len(self._items)
            try:
                while True:
                    end = self._first + len(self._items)
                    # A cursor beyond the end waits for its item (another run's cursor: the
                    # reader sees the new run in the answer and starts again).
                    if cursor < end or self._closed:
                        break
                    now = time.monotonic()
                    remaining = deadline - now
                    if remaining <= 0:
                        break
                    if direct_from is not None and waiting is None:
                        if now < direct_from:
                            remaining = min(remaining, direct_from - now)
                        elif cursor == end:
                            waiting = _Waiting(cursor, answerer)
                            self._direct.append(waiting)
                    self._waiting += 1
                    try:
                        self._cond.wait(remaining)
                    finally:
                        self._waiting -= 1
                    if waiting is not None and waiting.state:
                        while waiting.state == 1:  # being sent: the publish says when done
                            self._cond.wait(0.1)
                        assert waiting.answer is not None
                        return Delivered(waiting.answer) if waiting.sent else waiting.answer
            finally:
                if waiting is not None and not waiting.state:
                    self._direct.remove(waiting)
            dropped = max(0, self._first - cursor)
            start = max(cursor, self._first)
            stop = min(end, start + max_items)
            offset = start - self._first
            items = []
            size = 0
            for value, nbytes, _, _ in itertools.islice(
                self._items, offset, offset + max(0, stop - start)
            ):
                if items and size + nbytes > MAX_BATCH_BYTES:
                    break  # the rest comes with the next read
                items.append(value)
                size += nbytes
            stop = start + len(items)
            done = self._closed and stop >= end
        return ReadAnswer(items=items, cursor=stop, dropped=dropped, done=done)

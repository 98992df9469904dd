"""One connection per using thread: what lets a ``DeviceProxy`` belong to no thread.

A Pyro5 proxy keeps its connection and its conversation state (message sequence number,
the handshake it sends, the timeout of a connect in progress) in plain attributes, and
refuses calls from any thread but its owner's. A ``DeviceProxy`` keeps that state in a
``Slot`` per using thread instead (the descriptors below put Pyro5's attribute names on
it), so any thread may call it at any time: each thread talks over its own connection,
made on its first call.

Bounded: at most ``limit`` connections per proxy (``max_connections`` of ``connect()``,
default ``MAX_CONNECTIONS``). A thread that needs one more takes over the connection that
has been idle longest (its thread reconnects when it calls again); when every connection
is in a call, it waits for one within its call's time, then raises ``ClientBusy``.
Released: a thread's connection closes when the thread ends (its slot is freed with the
thread's other thread-local values), when ``release_all()`` runs (``with`` blocks,
``pyroinst.disconnect``), or when the proxy is garbage.

A proxy made with ``per_thread=False`` keeps one slot for every thread: one connection,
used by one thread at a time as its owner arranges (stream readers, the web server's
pool), without Pyro5's owner check.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import weakref
from typing import Any

from .errors import ClientBusy

__all__ = ["MAX_CONNECTIONS", "UNSET", "Connections", "Slot", "install_descriptors"]

#: Default for the most connections one proxy opens (one per thread using it).
MAX_CONNECTIONS = 32

#: A slot value not set (the proxy-wide one applies).
UNSET: Any = object()


class _Box:
    """Holds a slot's connection, also for the finalizer that runs after the slot is gone."""

    __slots__ = ("conn",)

    def __init__(self) -> None:
        self.conn: Any = None


class Slot:
    """One thread's conversation with the device: connection and Pyro5's state for it."""

    __slots__ = (
        "box",
        "seq",
        "local_socket",
        "timeout",
        "handshake",
        "waiting",
        "busy",
        "used",
        "reserved",
        "__weakref__",
    )

    def __init__(self) -> None:
        self.box = _Box()
        self.seq = 0
        self.local_socket: Any = None
        self.timeout: Any = UNSET  # a timeout for this thread only (a connect attempt)
        self.handshake: Any = UNSET
        self.waiting = False
        self.busy = 0
        self.used = 0.0
        self.reserved = False


class Connections:
    """The slots of one proxy: per thread (``per_thread``) or one shared, and their bound."""

    def __init__(self, per_thread: bool = True, limit: int = MAX_CONNECTIONS) -> None:
        if int(limit) < 1:
            raise ValueError(f"max_connections must be 1 or more, got {limit!r}")
        self.per_thread = bool(per_thread)
        self.limit = int(limit)
        self._local = threading.local()
        self._shared = None if per_thread else Slot()
        # The condition's own lock, taken directly where nothing waits (a call's enter).
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._live: weakref.WeakSet[Slot] = weakref.WeakSet()
        self.count = 0  # connections open or being made
        self._waiting = 0  # threads waiting in reserve() for a connection

    def slot(self) -> Slot:
        """The calling thread's slot (made on first use)."""
        shared = self._shared
        if shared is not None:
            return shared
        try:
            return self._local.slot  # type: ignore[no-any-return]
        except AttributeError:
            slot = self._local.slot = Slot()
            # When the thread ends, its slot goes, and its connection with it.
            # (The finalizer holds this object weakly: it must not keep the proxy alive.)
            weakref.finalize(slot, _gone, weakref.ref(self), slot.box)
            return slot

    # -- the bound -----------------------------------------------------------------------
    def reserve(self, deadline: float | None, label: str) -> None:
        """Count a connection the calling thread is about to make, within the bound."""
        slot = self.slot()
        if slot.reserved or slot.box.conn is not None:
            return
        with self._cond:
            while self.count >= self.limit:
                if self._evict_idle(slot):
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ClientBusy(
                        f"{label}: all {self.limit} connections of this proxy are in calls "
                        "of other threads. Give connect() a larger max_connections, or "
                        "use fewer threads at once.",
                    )
                self._waiting += 1
                try:
                    self._cond.wait(left if left is not None else 1.0)
                finally:
                    self._waiting -= 1
            self.count += 1
            slot.reserved = True

    def _evict_idle(self, mine: Slot) -> bool:
        """Close the connection idle longest (its thread reconnects later); True if one was."""
        idle = [s for s in self._live if s is not mine and s.busy == 0 and s.box.conn is not None]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.used)
        conn, victim.box.conn = victim.box.conn, None
        self._live.discard(victim)
        self.count -= 1
        with contextlib.suppress(Exception):
            conn.close()
        return True

    def unreserve(self) -> None:
        """The connection counted by ``reserve`` was not made."""
        slot = self.slot()
        if slot.reserved:
            with self._cond:
                slot.reserved = False
                if slot.box.conn is None:
                    self.count -= 1
                    self._cond.notify_all()

    def set_conn(self, slot: Slot, conn: Any) -> None:
        """Pyro5 made (``conn``) or dropped (None) the slot's connection."""
        old = slot.box.conn
        if conn is old:
            return
        with self._cond:
            if conn is not None and old is None:
                if slot.reserved:
                    slot.reserved = False  # counted when reserved
                else:
                    self.count += 1
                self._live.add(slot)
            elif conn is None and old is not None:
                self.count -= 1
                self._live.discard(slot)
                self._cond.notify_all()
            slot.box.conn = conn

    # -- calls ---------------------------------------------------------------------------
    def enter(self) -> Slot:
        """The calling thread starts a call: its connection is not taken over meanwhile."""
        slot = self.slot()
        with self._lock:
            slot.busy += 1
        return slot

    def leave(self, slot: Slot) -> None:
        """The call that ``enter`` began has ended."""
        # Only this slot's thread changes its busy count; the lock is for waking a thread
        # that waits for a connection (rare: all of the proxy's are in calls).
        slot.used = time.monotonic()
        slot.busy -= 1
        if self._waiting and slot.busy == 0:
            with self._cond:
                self._cond.notify_all()

    def release_all(self) -> None:
        """Close every thread's connection. One in a call is cut (its call raises
        ConnectionLost); each thread connects afresh on its next call."""
        with self._cond:
            slots = list(self._live)
            for slot in slots:
                conn = slot.box.conn
                if conn is None:
                    continue
                if slot.busy:
                    # Its thread is in a call: wake it; it drops the connection itself.
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    continue
                slot.box.conn = None
                self._live.discard(slot)
                self.count -= 1
                with contextlib.suppress(Exception):
                    conn.close()
            self._cond.notify_all()

    def open_connections(self) -> int:
        """How many connections this proxy has open now (in all threads)."""
        with self._cond:
            return sum(1 for slot in self._live if slot.box.conn is not None)


def _gone(owner: weakref.ref[Connections], box: _Box) -> None:
    """A thread's slot is gone (the thread ended, or the proxy is garbage): close its
    connection."""
    conn, box.conn = box.conn, None
    if conn is None:
        return
    conns = owner()
    if conns is not None:
        with conns._cond:
            conns.count -= 1
            conns._cond.notify_all()
    with contextlib.suppress(Exception):
        conn.close()


def _slot_attr(field: str, doc: str) -> property:
    def get(self: Any) -> Any:
        return getattr(self._pyroinst_conns.slot(), field)

    def put(self: Any, value: Any) -> None:
        setattr(self._pyroinst_conns.slot(), field, value)

    return property(get, put, doc=doc)


def _connection() -> property:
    def get(self: Any) -> Any:
        return self._pyroinst_conns.slot().box.conn

    def put(self: Any, value: Any) -> None:
        conns = self._pyroinst_conns
        conns.set_conn(conns.slot(), value)

    return property(get, put, doc="The calling thread's connection (None until its first call).")


def _timeout() -> property:
    def get(self: Any) -> Any:
        value = self._pyroinst_conns.slot().timeout
        return self.__dict__.get("_pyroinst_timeout") if value is UNSET else value

    def put(self: Any, value: Any) -> None:
        self.__dict__["_pyroinst_timeout"] = value

    return property(get, put, doc="The proxy's call timeout (a connect attempt's, meanwhile).")


def _handshake() -> property:
    def get(self: Any) -> Any:
        value = self._pyroinst_conns.slot().handshake
        return self.__dict__.get("_pyroinst_handshake", "hello") if value is UNSET else value

    def put(self: Any, value: Any) -> None:
        # Set for each connect (the proof's nonce): this thread's, not the others'.
        self._pyroinst_conns.slot().handshake = value

    return property(get, put, doc="The data this thread's next connect sends.")


def _owner_thread() -> property:
    # Pyro5 compares this with the calling thread: whichever thread calls is the owner.
    return property(lambda self: threading.get_ident(), lambda self, value: None)


def install_descriptors(cls: type) -> None:
    """Put the per-thread attributes on ``cls`` (a Pyro5 Proxy subclass)."""
    cls._pyroConnection = _connection()  # type: ignore[attr-defined]
    cls._pyroSeq = _slot_attr("seq", "This thread's message sequence number.")  # type: ignore[attr-defined]
    cls._pyroLocalSocket = _slot_attr("local_socket", "This thread's local address.")  # type: ignore[attr-defined]
    cls._Proxy__pyroTimeout = _timeout()  # type: ignore[attr-defined]
    cls._Proxy__pyroOwnerThread = _owner_thread()  # type: ignore[attr-defined]
    cls._pyroHandshake = _handshake()  # type: ignore[attr-defined]
    cls._pyroinst_waiting = _slot_attr(  # type: ignore[attr-defined]
        "waiting", "True while this thread's call is a wait the server was asked to make."
    )

"""Large arrays through Pyro5 at close to wire speed, over the same connection.

Between a pyroinst client and a pyroinst device, an array of at least ``INLINE_MAX``
bytes does not go through the serializer: its memory travels as a Pyro5 message
annotation (raw bytes beside the serialized payload), and the serialized value holds a
small marker ``{"__pyroinst__": "ndarray", "dtype", "shape", "ann": KEY}``. The bytes are
sent straight from the array's memory and received straight into the buffer the new
array wraps, so neither side copies them in user space. Being part of the ordinary
Pyro5 message, they share its connection, its authentication and its TLS; nothing in them
is ever unpickled or evaluated.

Who uses it: a client announces it understands annotated arrays with the request
annotation ``PIFW`` on a connection's first call; a server answers with annotated arrays
only on such connections, so a client without pyroinst always gets the plain dict with
inline ``data``. A client sends annotated arrays only to a pyroinst device (recognised by
its reserved members).

To get there, ``install()`` replaces three pieces of Pyro5 (idempotent, on ``import
pyroinst``):

* ``protocol.SendingMessage``: a message with large parts keeps them as a list of
  buffers instead of concatenating header, annotations and payload into new bytes;
* ``socketutil.send_data``: sends such a list with ``sendmsg`` (scatter/gather), and
  sends with memoryview offsets when the socket has a timeout (Pyro5's own loop copies
  the remainder after every partial send, which makes large messages quadratic);
* ``protocol.recv_stub``: receives a large message with ``recv_into`` into one
  writeable, uninitialised buffer (arrays wrap it without a copy);

and wraps ``Proxy._pyroInvoke`` to know, while a call is serialized, which proxy makes it
(so uploads go annotated only to pyroinst devices), and to drop the array annotations
from the thread's sticky request annotations once the call is over.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import threading
import time
from typing import Any

import numpy as np
import Pyro5.client
import Pyro5.errors
from Pyro5 import config as pyro_config
from Pyro5 import protocol, socketutil
from Pyro5.callcontext import current_context

from . import compat

__all__ = ["install", "INLINE_MAX", "FLAG", "peer_is_fast", "annotate", "annotated_array"]

log = logging.getLogger(__name__)

#: Arrays smaller than this travel inline in the serialized payload.
INLINE_MAX = 64 * 1024
#: Request annotation of a client that understands annotated arrays.
FLAG = "PIFW"
# Annotation keys are 4 ASCII characters; these prefixes stay clear of Pyro5's and users'.
_ARRAY_PREFIX = "~"
_PAD_PREFIX = "^"
_ALIGN = 64
_MAX_KEYS = 4096
_RETRY = frozenset({errno.EINTR, errno.EAGAIN, errno.EWOULDBLOCK})

_tls = threading.local()


# -- sending -------------------------------------------------------------------------------
class Gather:
    """An outgoing message as a list of buffers, sent without joining them."""

    __slots__ = ("parts", "nbytes")

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.nbytes = sum(memoryview(p).nbytes for p in parts)

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(bytes(memoryview(p).cast("B")) for p in self.parts)

    def __getitem__(self, index: Any) -> Any:
        return bytes(self)[index]


class SendingMessage(protocol.SendingMessage):
    """Pyro5's SendingMessage, keeping large annotations and payloads as separate buffers.

    The header and layout are Pyro5's; a message of at least INLINE_MAX bytes gets a
    Gather as ``data`` instead of one concatenated bytes object.
    """

    def __init__(self, msgtype, flags, seq, serializer_id, payload, annotations=None):  # noqa: D107
        if pyro_config.COMPRESSION:
            super().__init__(msgtype, flags, seq, serializer_id, payload, annotations)
            return
        self.type = msgtype
        self.seq = seq
        self.serializer_id = serializer_id
        flags &= ~protocol.FLAGS_COMPRESSED
        parts: list[Any] = []
        annotations_size = 0
        if annotations:
            for key, value in annotations.items():
                if len(key) != 4:
                    raise Pyro5.errors.ProtocolError(
                        "annotation identifier must be 4 ascii characters"
                    )
                if not isinstance(value, bytes | bytearray | memoryview):
                    raise Pyro5.errors.ProtocolError(
                        "annotation data must be bytes, bytearray, or memoryview", type(value)
                    )
                size = memoryview(value).nbytes
                parts.append(_ANNOTATION_HEADER.pack(key.encode("ascii"), size))
                parts.append(value)
                annotations_size += 8 + size
        total = len(payload) + annotations_size
        peer_max = getattr(_tls, "peer_max", None)
        if peer_max is not None and total > peer_max and msgtype == protocol.MSG_INVOKE:
            from .errors import MessageTooLarge

            raise MessageTooLarge(
                f"this call is a message of {total} bytes; {_tls.peer_label} accepts at most "
                f"{peer_max} (its max_message_size). Send smaller pieces, or raise the "
                "server's max_message_size.",
                size=total,
            )
        if total > pyro_config.MAX_MESSAGE_SIZE:
            raise Pyro5.errors.ProtocolError(
                f"message too large ({total:d}, max={pyro_config.MAX_MESSAGE_SIZE:d})"
            )
        if current_context.correlation_id:
            flags |= protocol.FLAGS_CORR_ID
            self.corr_id = current_context.correlation_id.bytes
        else:
            self.corr_id = protocol._empty_correlation_id
        self.flags = flags
        header = _HEADER.pack(
            b"PYRO",
            protocol.PROTOCOL_VERSION,
            msgtype,
            serializer_id,
            flags,
            seq,
            len(payload),
            annotations_size,
            self.corr_id,
            0,
            protocol._magic_number,
        )
        if total < INLINE_MAX:
            self.data = header + b"".join(parts) + payload if parts else header + payload
        else:
            self.data = Gather([header, *parts, payload])


_HEADER = struct.Struct(protocol._header_format)
_ANNOTATION_HEADER = struct.Struct("!4sI")


def expect_peer_limit(limit: int | None, label: str) -> None:
    """Client side: the server of the next call on this thread accepts ``limit`` bytes."""
    _tls.peer_max = limit
    _tls.peer_label = label


def _byte_views(data: Any) -> list[memoryview]:
    parts = data.parts if isinstance(data, Gather) else [data]
    return [v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes]


_original_send = socketutil.send_data


def send_data(sock: socket.socket, data: Any) -> None:
    """Send ``data`` (bytes-like or a Gather) completely; Pyro5's errors on failure."""
    if not isinstance(data, Gather) and (len(data) < INLINE_MAX or sock.gettimeout() is None):
        return _original_send(sock, data)  # small, or sendall: Pyro5's own is fine
    views = _byte_views(data)
    is_ssl = hasattr(sock, "getpeercert")
    try:
        if is_ssl or not hasattr(sock, "sendmsg"):
            for view in views:
                _send_view(sock, view)
            return
        while views:
            try:
                sent = sock.sendmsg(views[:512])
            except OSError as exc:
                if exc.errno in _RETRY:
                    time.sleep(0.001)
                    continue
                raise
            while sent:
                first = views[0]
                if sent >= first.nbytes:
                    sent -= first.nbytes
                    views.pop(0)
                else:
                    views[0] = first[sent:]
                    sent = 0
    except TimeoutError:  # socket.timeout
        raise Pyro5.errors.TimeoutError("sending: timeout") from None
    except OSError as exc:
        raise Pyro5.errors.ConnectionClosedError(f"sending: connection lost: {exc}") from None


def _send_view(sock: socket.socket, view: memoryview) -> None:
    if sock.gettimeout() is None:
        sock.sendall(view)
        return
    while view.nbytes:
        try:
            sent = sock.send(view)
        except OSError as exc:
            if exc.errno in _RETRY:
                time.sleep(0.001)
                continue
            raise
        view = view[sent:]


def _receive_big(sock: socket.socket, size: int) -> Any:
    """Receive exactly ``size`` bytes into one writeable, uninitialised buffer (a memoryview)."""
    # Uninitialised memory: bytearray(size) would first write zeros over all of it.
    view = memoryview(np.empty(size, dtype=np.uint8))
    buf = view
    got = 0
    try:
        while got < size:
            try:
                n = sock.recv_into(view[got:], size - got)
            except OSError as exc:
                if exc.errno in _RETRY:
                    time.sleep(0.001)
                    continue
                raise
            if not n:
                err = Pyro5.errors.ConnectionClosedError("receiving: not enough data")
                err.partialData = buf[:got]  # type: ignore[attr-defined]
                raise err
            got += n
    except TimeoutError:
        raise Pyro5.errors.TimeoutError("receiving: timeout") from None
    except Pyro5.errors.PyroError:
        raise
    except OSError as exc:
        raise Pyro5.errors.ConnectionClosedError(f"receiving: connection lost: {exc}") from None
    return buf


def _peer(connection: Any) -> str:
    try:
        host, port = connection.sock.getpeername()[:2]
        return f"{host}:{port}"
    except (AttributeError, OSError, TypeError):
        return "?"


def recv_stub(connection: Any, accepted_msgtypes: Any = None) -> protocol.ReceivingMessage:
    """Pyro5's recv_stub, receiving a large payload with ``recv_into`` (see _receive_big)."""
    header = connection.recv(6)
    protocol.ReceivingMessage.validate(header)
    header += connection.recv(protocol._header_size - 6)
    try:
        msg = protocol.ReceivingMessage(header)
    except Pyro5.errors.ProtocolError as exc:
        # Oversized or malformed: the connection is dropped; the log says why.
        log.warning(
            "refused a message from %s: %s (max_message_size is %d bytes)",
            _peer(connection),
            exc,
            pyro_config.MAX_MESSAGE_SIZE,
        )
        raise
    if accepted_msgtypes and msg.type not in accepted_msgtypes:
        err = "invalid msg type {:d} received (expected: {:s})".format(
            msg.type, ",".join(str(t) for t in accepted_msgtypes)
        )
        # A refused connection, not a fault of this server: a warning, not an error.
        log.warning("%s from %s", err, _peer(connection))
        exc = Pyro5.errors.ProtocolError(err)
        exc.pyroMsg = msg  # type: ignore[attr-defined]
        raise exc
    size = msg.annotations_size + msg.data_size
    sock = getattr(connection, "sock", None)
    if size >= INLINE_MAX and sock is not None:
        payload = _receive_big(sock, size)
    else:
        payload = connection.recv(size)
    msg.add_payload(payload)
    return msg


# -- which calls use annotated arrays ---------------------------------------------------------
_PYROINST_MEMBERS = frozenset({"job_result", "job_start", "describe"})


def _calling_pyroinst_device() -> bool:
    proxy = getattr(_tls, "proxy", None)
    return proxy is not None and _PYROINST_MEMBERS <= proxy._pyroMethods


def _is_ours(key: str) -> bool:
    return key[:1] in (_ARRAY_PREFIX, _PAD_PREFIX)


def clear_response_annotations() -> None:
    """Drop the array annotations of the current response (Pyro5 resets them only after a
    successful send, so a failed one would leave them for the thread's next response)."""
    leftover = current_context.response_annotations
    if leftover:
        for key in [k for k in leftover if _is_ours(k)]:
            del leftover[key]


def note_peer() -> None:
    """Server side, before a response is encoded: start clean, and remember a client's
    announcement on its connection."""
    clear_response_annotations()
    annotations = current_context.annotations
    if annotations and FLAG in annotations and current_context.client is not None:
        current_context.client._pyroinst_fast = True


def response_annotations_size() -> int:
    """Bytes the current response's annotations add to its message."""
    annotations = current_context.response_annotations
    return sum(8 + memoryview(v).nbytes for v in annotations.values()) if annotations else 0


def calling_proxy() -> Any:
    """Client side, while a reply is decoded: the proxy that made the call (or None)."""
    return getattr(_tls, "proxy", None)


def peer_is_fast() -> bool:
    """Server side, during a call: True if the calling client understands annotated arrays.

    A client announces it once per connection (the FLAG request annotation); the server
    remembers it on the connection.
    """
    conn = current_context.client
    if conn is None:
        return False
    if getattr(conn, "_pyroinst_fast", False):
        return True
    if FLAG in (current_context.annotations or {}):
        conn._pyroinst_fast = True
        return True
    return False


def byte_view(a: np.ndarray) -> memoryview:
    """The bytes of the C-contiguous array ``a`` as a flat memoryview (no copy).

    datetime64/timedelta64 arrays have no buffer of their own: their int64 view has.
    """
    if a.dtype.kind in "mM":
        a = a.view(np.int64)
    return memoryview(a).cast("B")


def _annotate(target: dict[str, Any], a: np.ndarray) -> dict[str, Any] | None:
    """Put ``a``'s memory into ``target`` (annotations); the marker dict, or None if full."""
    used = [k for k in target if k[0] == _ARRAY_PREFIX and len(k) == 4]
    if len(used) >= _MAX_KEYS:
        return None
    key = f"{_ARRAY_PREFIX}{len(used):03x}"
    # Align the array's data in the receiver's buffer (the payload starts after the header).
    offset = sum(8 + memoryview(v).nbytes for v in target.values())
    pad = (-(offset + 16)) % _ALIGN
    if (offset + 8) % _ALIGN:
        target[f"{_PAD_PREFIX}{len(used):03x}"] = bytes(pad)
    target[key] = byte_view(a)
    return {"__pyroinst__": "ndarray", "dtype": a.dtype.str, "shape": list(a.shape), "ann": key}


def annotate(a: np.ndarray, outgoing: str) -> dict[str, Any] | None:
    """The marker for a large contiguous array sent as an annotation, or None to send inline.

    ``outgoing`` is ``"request"`` (client side) or ``"response"`` (server side).
    """
    if a.nbytes < INLINE_MAX or not _installed:
        return None
    if outgoing == "request":
        if not _calling_pyroinst_device():
            return None
        _tls.annotated = True
        return _annotate(current_context.annotations, a)
    if not peer_is_fast():
        return None
    return _annotate(current_context.response_annotations, a)


class PendingArray:
    """Server side: an uploaded array whose bytes are in the request's annotations.

    Pyro5 decodes a call's arguments before it makes the request's annotations current,
    so the device servant resolves these just before calling the driver.
    """

    __slots__ = ("key", "dtype", "shape")

    def __init__(self, key: str, dtype: str, shape: list[int]) -> None:
        self.key, self.dtype, self.shape = key, dtype, shape

    def resolve(self) -> np.ndarray:
        """The array, wrapping the received buffer."""
        return annotated_array(current_context.annotations, self.key, self.dtype, self.shape)


def annotated_array(annotations: dict[str, Any], key: str, dtype: str, shape: list[int]) -> Any:
    """Wrap the annotation ``key`` as an array (a writeable view when the buffer allows)."""
    from .errors import NotSerializableError

    view = annotations.get(key)
    if view is None:
        raise NotSerializableError(f"array data {key!r} missing from the message")
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise NotSerializableError("refusing to decode an array of object dtype")
    a = np.frombuffer(view, dtype=dt).reshape(tuple(int(n) for n in shape))
    return a if a.flags.writeable else a.copy()


def note_pending() -> None:
    """Record that the call being decoded on this thread holds PendingArrays."""
    _tls.pending = True


def take_pending() -> bool:
    """True (once) if the last decoded call on this thread held PendingArrays."""
    if getattr(_tls, "pending", False):
        _tls.pending = False
        return True
    return False


# -- installing ----------------------------------------------------------------------------------
_installed = False
_original_invoke = Pyro5.client.Proxy._pyroInvoke


def drop_request_annotations() -> None:
    """Client side: remove the array annotations (and the announcement) this thread set."""
    _tls.annotated = False
    annotations = current_context.annotations
    for key in [k for k in annotations if k == FLAG or _is_ours(k)]:
        del annotations[key]


def _pyro_invoke(self, methodname, vargs, kwargs, flags=0, objectId=None):  # noqa: N803
    previous = getattr(_tls, "proxy", None)
    _tls.proxy = self
    try:
        return _original_invoke(self, methodname, vargs, kwargs, flags, objectId)
    finally:
        _tls.proxy = previous
        if getattr(_tls, "annotated", False):
            drop_request_annotations()


def set_calling_proxy(proxy: Any) -> Any:
    """Client side: note the proxy whose call this thread makes now; returns the previous one."""
    previous = getattr(_tls, "proxy", None)
    _tls.proxy = proxy
    return previous


def enabled() -> bool:
    """True when the fast path is in Pyro5 (see ``compat`` for when it is not)."""
    return _installed


def install() -> None:
    """Put the fast message path into Pyro5 (idempotent).

    Only with a tested Pyro5 version and unless PYROINST_FASTWIRE=0 (see ``compat``);
    otherwise Pyro5 is left as it is, and arrays travel inline in the payload.
    """
    global _installed
    if _installed or not compat.fastwire_wanted():
        return
    protocol.SendingMessage = SendingMessage
    protocol.recv_stub = recv_stub
    socketutil.send_data = send_data
    Pyro5.client.Proxy._pyroInvoke = _pyro_invoke
    _installed = True


def mark_request() -> None:
    """Client side: on a connection's first call, announce that annotated arrays are understood."""
    proxy = getattr(_tls, "proxy", None)
    conn = proxy._pyroConnection if proxy is not None and _installed else None
    if conn is None or getattr(conn, "_pyroinst_announced", False):
        return
    conn._pyroinst_announced = True
    current_context.annotations[FLAG] = b"1"
    _tls.annotated = True

"""Large arrays through Pyro5 at close to wire speed, over the same connection.

Between a pyroinst client and a pyroinst device, an array of at least ``INLINE_MAX``
bytes does not go through the serializer: its memory travels as a Pyro5 message
annotation (raw bytes beside the serialized payload), and the serialized value holds a
small marker ``{"__pyroinst__": "ndarray", "dtype", "shape", "ann": KEY}``. The bytes are
sent straight from the array's memory and received straight into the buffer the new
array wraps, so neither side copies them in user space. Being part of the ordinary
Pyro5 message, they share its connection, its authentication and its TLS; nothing in them
is ever unpickled or evaluated.

Who uses it: both sides say so in Pyro5's connection handshake. A client's ``CONNECT``
message carries the annotation ``PIFW``; a server answers with annotated arrays only on
connections whose client said so, so a client without pyroinst always gets the plain
dict with inline ``data``. A server's ``CONNECTOK`` carries ``PIFW`` too, and a client
sends annotated arrays only on connections whose server said so (a plain Pyro5 daemon,
or a pyroinst one with the fast path off, gets them inline). Nothing is announced on a
call, so a connection whose first call failed before it was sent loses nothing.

Receiving: ``recv_stub`` takes the array annotations out of a received call (or reply)
and keeps them for this thread while its payload is decoded, so every array argument is
a real array at once, on every call path Pyro5 has (plain, batch, oneway, nested).
Nothing of a call stays referenced once it is answered: the decoded arrays own the
buffer, Pyro5's ``current_context.annotations`` hold only the caller's own annotations,
and the daemons reset them after each request (``FastwireDaemon``).

To get there, ``install()`` replaces three pieces of Pyro5 (idempotent, on ``import
pyroinst``):

* ``protocol.SendingMessage``: a message with large parts keeps them as a list of
  buffers instead of concatenating header, annotations and payload into new bytes;
* ``socketutil.send_data``: sends such a list with ``sendmsg`` (scatter/gather), and
  sends with memoryview offsets when the socket has a timeout (Pyro5's own loop copies
  the remainder after every partial send, which makes large messages quadratic);
* ``protocol.recv_stub``: receives a large message with ``recv_into`` into one
  writeable, uninitialised buffer (arrays wrap it without a copy), and notes the
  handshake's announcements and a message's array annotations (see above);

and wraps ``Proxy.__pyroCreateConnection`` (to announce the fast path in a pyroinst
proxy's handshake) and ``Proxy._pyroInvoke``, to know, while a call is serialized, which
proxy makes it,
and to drop the array annotations from the thread's sticky request annotations, and from
its response annotations, once the call is over.
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
from Pyro5 import protocol, serializers, socketutil
from Pyro5.callcontext import current_context

from . import compat, preproof
from .errors import MessageRefused

__all__ = [
    "install",
    "INLINE_MAX",
    "FLAG",
    "WIRE_MAX",
    "peer_is_fast",
    "annotate",
    "annotated_array",
    "incoming_array",
    "received_array_keys",
    "FastwireDaemon",
]

log = logging.getLogger(__name__)

#: Arrays smaller than this travel inline in the serialized payload.
INLINE_MAX = 64 * 1024
#: The largest handshake (CONNECT message) a daemon reads.
CONNECT_MAX = 64 * 1024
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
        if _fast and (
            (msgtype == protocol.MSG_CONNECT and getattr(_tls, "connecting", False))
            or (msgtype == protocol.MSG_CONNECTOK and getattr(_tls, "handshaking", False))
        ):
            # A pyroinst proxy's or daemon's handshake: say that annotated arrays are
            # understood (other messages, other daemons' handshakes: as Pyro5 makes them).
            annotations = {**(annotations or {}), FLAG: b"1"}
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
                if size > WIRE_MAX:
                    _too_large(size)
                parts.append(_ANNOTATION_HEADER.pack(key.encode("ascii"), size))
                parts.append(value)
                annotations_size += 8 + size
        total = len(payload) + annotations_size
        if total > WIRE_MAX:
            _too_large(total)
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
#: The largest message (and annotation) Pyro5's header can describe: sizes are 32-bit.
WIRE_MAX = 2**32 - 1
_ANNOTATION_HEADER = struct.Struct("!4sI")


def _too_large(size: int) -> None:
    from .errors import MessageTooLarge

    # Pyro5's header holds 32-bit sizes; struct.pack would fail with struct.error.
    raise MessageTooLarge(
        f"this message would be at least {size} bytes; a Pyro5 message holds less than "
        f"4 GiB ({WIRE_MAX + 1} bytes). Send smaller pieces.",
        size=size,
    )


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
    if msg.type == protocol.MSG_CONNECT and size > CONNECT_MAX:
        # Before its handshake a client is nobody: it gets no large buffer.
        log.warning("refused a handshake of %d bytes from %s", size, _peer(connection))
        raise Pyro5.errors.ProtocolError(f"handshake of {size} bytes refused")
    if msg.serializer_id == preproof.MARSHAL and getattr(connection, "_pyroinst_strict", False):
        _refuse_marshal(connection, msg)
    answer_to = None
    if msg.type in (protocol.MSG_CONNECTOK, protocol.MSG_CONNECTFAIL):
        answer_to = getattr(_tls, "connect_serializer", None)
        if answer_to is not None:
            _check_answer_header(connection, msg, answer_to)
    sock = getattr(connection, "sock", None)
    if size >= INLINE_MAX and sock is not None:
        payload = _receive_big(sock, size)
    else:
        payload = connection.recv(size)
    if msg.flags & protocol.FLAGS_COMPRESSED:
        # Pyro5 would inflate without limit: a few KB can become gigabytes.
        msg.flags &= ~protocol.FLAGS_COMPRESSED
        msg.add_payload(payload)
        limit = pyro_config.MAX_MESSAGE_SIZE if answer_to is None else preproof.ANSWER_MAX
        try:
            msg.data = preproof.inflate(msg.data, limit)
        except MessageRefused as exc:
            log.warning("refused a message from %s: %s", _peer(connection), exc)
            if answer_to is not None:
                raise MessageRefused(
                    f"refused the handshake answer of the server at {_peer(connection)}: {exc}"
                ) from None
            # A server's worker: the connection ends (Pyro5 logs SecurityError quietly).
            raise Pyro5.errors.SecurityError(f"{exc} from {_peer(connection)}") from None
        msg.data_size = len(msg.data)
    else:
        msg.add_payload(payload)
    if answer_to is not None and answer_to != preproof.MARSHAL:
        # (A proxy that chose marshal itself gets Pyro5's behaviour: pyroinst's own never do.)
        try:
            preproof.bounded_loads(
                msg.serializer_id, msg.data, preproof.ANSWER_MAX, preproof.ANSWER_ITEMS
            )
        except MessageRefused as exc:
            raise MessageRefused(
                f"refused the handshake answer of the server at {_peer(connection)}: {exc}"
            ) from None
    annotations = msg.annotations
    if msg.type in (protocol.MSG_INVOKE, protocol.MSG_RESULT):
        _take_arrays(annotations)
    elif annotations and FLAG in annotations:
        if msg.type == protocol.MSG_CONNECT:
            connection._pyroinst_fast = True  # server side: the client understands
        elif msg.type == protocol.MSG_CONNECTOK:
            connection._pyroinst_server_fast = True  # client side: the server does
        del annotations[FLAG]
    return msg


def _refuse_marshal(connection: Any, msg: protocol.ReceivingMessage) -> None:
    """A marshal message on a pyroinst daemon's connection: answered, never decoded, and
    the connection ends."""
    log.warning("refused a marshal message from %s: marshal is never decoded", _peer(connection))
    try:
        connection.send(preproof.marshal_refusal(msg))
    except Pyro5.errors.CommunicationError:
        pass
    raise Pyro5.errors.SecurityError(preproof.MARSHAL_REFUSED)


def _check_answer_header(connection: Any, msg: protocol.ReceivingMessage, sent: int) -> None:
    """Client side: refuse a handshake answer unread unless it is in the serializer the
    handshake was sent in and of a bounded size (compressed, it inflates to ANSWER_MAX at
    most: Pyro5 daemons compress their answers when its COMPRESSION is on)."""
    where = _peer(connection)
    problem = None
    if msg.serializer_id != sent:
        got = preproof.NAMES.get(msg.serializer_id, f"serializer {msg.serializer_id}")
        problem = (
            f"it is encoded in {got}, not in {preproof.NAMES.get(sent, sent)} as the request was"
        )
        if msg.serializer_id == preproof.MARSHAL:
            problem += " (marshal is never decoded: crafted marshal data crashes Python)"
    elif msg.data_size + msg.annotations_size > preproof.ANSWER_MAX:
        size = msg.data_size + msg.annotations_size
        problem = f"it is {size} bytes (at most {preproof.ANSWER_MAX})"
    if problem is not None:
        log.warning("refused the handshake answer of %s: %s", where, problem)
        raise MessageRefused(
            f"refused the handshake answer of the server at {where} unread: {problem}. It is "
            "not a pyroinst or Pyro5 server, or not one to trust."
        )


def _take_arrays(annotations: dict[str, Any]) -> None:
    """Move a received message's array annotations to this thread, for its decoding."""
    if not annotations:
        _tls.incoming, _tls.received = None, ()
        return
    ours = {k: annotations.pop(k) for k in [k for k in annotations if _is_ours(k)]}
    _tls.incoming = ours or None
    _tls.received = sorted(k for k in ours if k[0] == _ARRAY_PREFIX)


def received_array_keys() -> list[str]:
    """The array annotations of the last call or reply this thread received (for checks:
    empty when its arrays travelled inline)."""
    return list(getattr(_tls, "received", ()))


def forget_incoming() -> None:
    """Drop the array annotations kept for decoding (the arrays made own the buffer)."""
    _tls.incoming = None


def incoming_array(key: str, dtype: str, shape: list[int]) -> Any:
    """The array ``key`` of the message being decoded on this thread."""
    return annotated_array(getattr(_tls, "incoming", None) or {}, key, dtype, shape)


# -- which calls use annotated arrays ---------------------------------------------------------
def _is_ours(key: str) -> bool:
    return key[:1] in (_ARRAY_PREFIX, _PAD_PREFIX)


def clear_response_annotations() -> None:
    """Drop the array annotations of the current response (Pyro5 resets them only after a
    successful send, so a failed one would leave them for the thread's next response)."""
    leftover = current_context.response_annotations
    if leftover:
        for key in [k for k in leftover if _is_ours(k)]:
            del leftover[key]


def start_response() -> None:
    """Server side, before a response is encoded: no array annotations of an earlier one."""
    clear_response_annotations()


def response_annotations_size() -> int:
    """Bytes the current response's annotations add to its message."""
    annotations = current_context.response_annotations
    return sum(8 + memoryview(v).nbytes for v in annotations.values()) if annotations else 0


def calling_proxy() -> Any:
    """Client side, while a reply is decoded: the proxy that made the call (or None)."""
    return getattr(_tls, "proxy", None)


def peer_is_fast() -> bool:
    """Server side, during a call: True if the calling client understands annotated arrays
    (it said so in its connection handshake)."""
    return bool(getattr(current_context.client, "_pyroinst_fast", False))


def _server_is_fast() -> bool:
    """Client side, while a call is serialized: True if the server said in the handshake
    that it understands annotated arrays."""
    proxy = getattr(_tls, "proxy", None)
    conn = getattr(proxy, "_pyroConnection", None)
    return bool(getattr(conn, "_pyroinst_server_fast", False))


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
    if a.nbytes < INLINE_MAX or not _fast:
        return None
    if outgoing == "request":
        if not _server_is_fast():
            return None
        _tls.annotated = True
        return _annotate(current_context.annotations, a)
    if not peer_is_fast():
        return None
    return _annotate(current_context.response_annotations, a)


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


# -- installing ----------------------------------------------------------------------------------
_installed = False
#: The fast array path is announced and used (not with PYROINST_FASTWIRE=0).
_fast = False
_original_invoke = Pyro5.client.Proxy._pyroInvoke
# Name-mangled: Proxy.__pyroCreateConnection, which every connect goes through.
_original_create = Pyro5.client.Proxy._Proxy__pyroCreateConnection  # type: ignore[attr-defined]


def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
    # Nested: a PYRONAME proxy's connect first connects to the name server.
    previous = getattr(_tls, "connecting", False)
    previous_serializer = getattr(_tls, "connect_serializer", None)
    _tls.connecting = True
    try:
        # PYRONAME: the name server's own connect (nested) sets its own while it runs.
        serializer = serializers.serializers.get(self._pyroSerializer or pyro_config.SERIALIZER)
        _tls.connect_serializer = None if serializer is None else serializer.serializer_id
        return _original_create(self, *args, **kwargs)
    finally:
        _tls.connecting = previous
        _tls.connect_serializer = previous_serializer


def drop_request_annotations() -> None:
    """Client side: remove the array annotations this thread set for its last call."""
    _tls.annotated = False
    annotations = current_context.annotations
    for key in [k for k in annotations if _is_ours(k)]:
        del annotations[key]


def _pyro_invoke(self, methodname, vargs, kwargs, flags=0, objectId=None):  # noqa: N803
    previous = getattr(_tls, "proxy", None)
    _tls.proxy = self
    try:
        return _original_invoke(self, methodname, vargs, kwargs, flags, objectId)
    finally:
        _tls.proxy = previous
        _tls.incoming = None  # the reply's arrays own their buffer now
        if getattr(_tls, "annotated", False):
            drop_request_annotations()


def set_calling_proxy(proxy: Any) -> Any:
    """Client side: note the proxy whose call this thread makes now; returns the previous one."""
    previous = getattr(_tls, "proxy", None)
    _tls.proxy = proxy
    return previous


def enabled() -> bool:
    """True when the fast path is in Pyro5 (see ``compat`` for when it is not)."""
    return _fast


def install() -> None:
    """Put pyroinst's message path into Pyro5 (idempotent).

    Only with a tested Pyro5 version (see ``compat``); otherwise Pyro5 is left as it is,
    and arrays travel inline in the payload. With PYROINST_FASTWIRE=0 the message path
    (and its checks, ``pyroinst.preproof``) is in, but the fast array path is neither
    announced nor used.
    """
    global _installed, _fast
    if _installed:
        return
    wanted = compat.fastwire_wanted()
    if not compat.pyro5_tested():
        return
    # The message path (and with it the checks of pyroinst.preproof) goes in with every
    # tested Pyro5; PYROINST_FASTWIRE=0 only keeps the fast array path from being announced.
    _fast = wanted
    protocol.SendingMessage = SendingMessage
    protocol.recv_stub = recv_stub
    socketutil.send_data = send_data
    Pyro5.client.Proxy._pyroInvoke = _pyro_invoke
    Pyro5.client.Proxy._Proxy__pyroCreateConnection = _create_connection  # type: ignore[attr-defined]
    _installed = True


class FastwireDaemon:
    """Mixin for Pyro5 daemons: says in its handshake that it understands annotated
    arrays (when the fast path is in), and keeps nothing of a request once it is answered.

    Pyro5 leaves a request's annotations (and the last response's) on the worker thread
    until that thread's next request; with uploads in them, an idle connection would
    keep hundreds of megabytes alive.
    """

    def _handshake(self, conn: Any, denied_reason: Any = None) -> Any:
        previous = getattr(_tls, "handshaking", False)
        _tls.handshaking = _fast
        try:
            return super()._handshake(conn, denied_reason)  # type: ignore[misc]
        finally:
            _tls.handshaking = previous

    def handleRequest(self, conn: Any) -> Any:  # noqa: N802 - Pyro5's name
        """Pyro5's handleRequest, then drop what the request left on this thread."""
        try:
            return super().handleRequest(conn)  # type: ignore[misc]
        finally:
            current_context.annotations = {}
            current_context.response_annotations = {}
            _tls.incoming = None

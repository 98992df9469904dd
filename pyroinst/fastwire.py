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

import logging
import struct
import weakref
from typing import Any

import numpy as np
import Pyro5.client
from Pyro5 import config as pyro_config
from Pyro5 import protocol, serializers, socketutil
from Pyro5.callcontext import current_context

from . import compat
from .receiving import (
    annotated_array,
    forget_incoming,
    incoming_array,
    known_dtype,
    received_array_keys,
    recv_stub,
)
from .sending import SEPARATE as _SEPARATE
from .sending import Gather, SendingMessage, expect_peer_limit, send_data
from .wire import ALIGN as _ALIGN
from .wire import ANNOTATION_HEADER as _ANNOTATION_HEADER
from .wire import ARRAY_PREFIX as _ARRAY_PREFIX
from .wire import (
    CONNECT_MAX,
    FIRST_HEAD,
    FIRST_KEY,
    FIRST_PAD,
    FIRST_PAD_KEY,
    FLAG,
    INLINE_MAX,
    WIRE_MAX,
    state,
)
from .wire import HEADER as _HEADER
from .wire import MAX_KEYS as _MAX_KEYS
from .wire import PAD_PREFIX as _PAD_PREFIX
from .wire import is_ours as _is_ours
from .wire import local as _tls

__all__ = [
    "install",
    "INLINE_MAX",
    "FLAG",
    "WIRE_MAX",
    "CONNECT_MAX",
    "Gather",
    "SendingMessage",
    "send_data",
    "recv_stub",
    "expect_peer_limit",
    "peer_is_fast",
    "annotate",
    "annotate_response",
    "annotate_into",
    "response_target",
    "array_reply",
    "arrays_reply",
    "annotated_array",
    "incoming_array",
    "known_dtype",
    "received_array_keys",
    "forget_incoming",
    "FastwireDaemon",
]

log = logging.getLogger(__name__)
_weakref = weakref.ref


# -- which calls use annotated arrays ---------------------------------------------------------


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
    if not annotations:
        return 0
    # Arrays only (most often): what annotate_into noted after the last one.
    last, last_key, length, _, offset = _tls.layout
    view = last()
    if view is not None and length == len(annotations) and annotations.get(last_key) is view:
        return offset
    return sum(
        8 + (len(v) if type(v) is bytes else memoryview(v).nbytes) for v in annotations.values()
    )


def response_target() -> dict[str, Any] | None:
    """Server side, during a call: the current response's annotations if large arrays may
    go there (the fast path is on and the calling client said it understands it), else
    None."""
    if not state.fast:
        return None
    ctx = current_context
    if not getattr(ctx.client, "_pyroinst_fast", False):
        return None
    return ctx.response_annotations  # type: ignore[no-any-return]


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


# Annotations start at a buffer's beginning: the first array's pad puts its data at
# offset ALIGN (see wire.FIRST_HEAD).


def annotate_into(target: dict[str, Any], a: np.ndarray) -> dict[str, Any] | None:
    """Put the C-contiguous array ``a``'s memory into ``target`` (a message's annotations,
    as ``response_target`` gives them); the marker dict to send in its place, or None when
    the message holds as many arrays as it can."""
    if not target:
        # The first annotation of the message (most arrays): what the general case makes.
        target[FIRST_PAD_KEY] = FIRST_PAD
        target[FIRST_KEY] = byte_view(a)
        return {
            "__pyroinst__": "ndarray",
            "dtype": a.dtype.str,
            "shape": list(a.shape),
            "ann": FIRST_KEY,
        }
    # How many arrays ``target`` holds and how many bytes its annotations are: after a
    # message's first array, seen at once; later, as this thread left them after its last
    # array, if ``target`` is still the dict it put that array into (its last key holds
    # that very view, and nothing was added since); otherwise counted (a message of many
    # arrays would count once per array).
    first = target.get(FIRST_KEY)
    if len(target) == 2 and type(first) is memoryview and target.get(FIRST_PAD_KEY) is FIRST_PAD:
        used, offset = 1, FIRST_ARRAY_EXTRA + first.nbytes
    else:
        last, last_key, length, used, offset = _tls.layout
        view = last()
        if view is None or length != len(target) or target.get(last_key) is not view:
            used = sum(1 for k in target if k[0] == _ARRAY_PREFIX and len(k) == 4)
            offset = sum(8 + memoryview(v).nbytes for v in target.values())
    if used >= _MAX_KEYS:
        return None
    key = f"{_ARRAY_PREFIX}{used:03x}"
    # Align the array's data in the receiver's buffer (the payload starts after the header).
    if (offset + 8) % _ALIGN:
        pad = (-(offset + 16)) % _ALIGN
        target[f"{_PAD_PREFIX}{used:03x}"] = bytes(pad)
        offset += 8 + pad
    view = byte_view(a)
    target[key] = view
    _tls.layout = (_weakref(view), key, len(target), used + 1, offset + 8 + view.nbytes)
    return {"__pyroinst__": "ndarray", "dtype": a.dtype.str, "shape": list(a.shape), "ann": key}


def annotate_response(a: np.ndarray) -> dict[str, Any] | None:
    """Server side: the marker of a reply that is the large array ``a`` alone, sent as an
    annotation (what ``annotate`` makes of it), or None for the general path."""
    if a.nbytes < INLINE_MAX or not state.fast or not a.flags.c_contiguous:
        return None
    ctx = current_context
    if ctx.response_annotations or not getattr(ctx.client, "_pyroinst_fast", False):
        return None
    return annotate_into(ctx.response_annotations, a)


#: What a message's first array adds to its annotations besides its bytes.
FIRST_ARRAY_EXTRA = len(FIRST_HEAD) + 4
_RESULT = protocol.MSG_RESULT
_LENGTH = struct.Struct("!I")
_VERSION = protocol.PROTOCOL_VERSION
_MAGIC = protocol._magic_number
_NO_CORR_ID = protocol._empty_correlation_id


def _result_header(
    seq: int, serializer_id: int, payload_size: int, annotations_size: int, corr: Any
) -> bytes:
    """Pyro5's header of a result message (``corr``: the correlation id's bytes or None)."""
    return _HEADER.pack(
        b"PYRO",
        _VERSION,
        _RESULT,
        serializer_id,
        protocol.FLAGS_CORR_ID if corr else 0,
        seq,
        payload_size,
        annotations_size,
        corr or _NO_CORR_ID,
        0,
        _MAGIC,
    )


def array_reply(
    seq: int, serializer_id: int, payload: bytes, annotations: dict[str, Any], corr: Any
) -> Gather | None:
    """Server side: the result message of a reply whose annotations are those of one
    array (as ``annotate_into`` makes them for a message's first), laid out as SendingMessage
    lays it out, or None for any other reply. ``corr``: the correlation id's 16 bytes (or
    None)."""
    if len(annotations) != 2 or next(iter(annotations)) != FIRST_PAD_KEY:
        return None
    view = annotations.get(FIRST_KEY)
    if type(view) is not memoryview or annotations[FIRST_PAD_KEY] is not FIRST_PAD:
        return None
    n = view.nbytes
    annotations_size = FIRST_ARRAY_EXTRA + n
    total = len(payload) + annotations_size
    if total > WIRE_MAX or total > pyro_config.MAX_MESSAGE_SIZE:
        return None  # (SendingMessage says what is wrong)
    header = _result_header(seq, serializer_id, len(payload), annotations_size, corr)
    head = header + FIRST_HEAD + _LENGTH.pack(n)
    return Gather([head, view, payload], _HEADER.size + total)


_pack_annotation = _ANNOTATION_HEADER.pack
_OURS = (_ARRAY_PREFIX, _PAD_PREFIX)


def arrays_reply(
    seq: int, serializer_id: int, payload: bytes, annotations: dict[str, Any], corr: Any
) -> Gather | None:
    """Server side: the result message of a reply whose annotations are all arrays and
    their pads (as ``annotate_into`` makes them), laid out as SendingMessage lays it out
    (small pieces joined, each array's memory a buffer of its own), or None for any other
    reply. ``corr``: the correlation id's 16 bytes (or None)."""
    parts: list[Any] = []
    run: list[Any] = []
    size = 0
    for key, value in annotations.items():
        kind = type(value)
        if kind is memoryview:
            n = value.nbytes
        elif kind is bytes:
            n = len(value)
        else:
            return None
        if key[:1] not in _OURS or len(key) != 4:
            return None
        run.append(_pack_annotation(key.encode(), n))
        if n < _SEPARATE:
            run.append(value)
        else:
            parts.append(b"".join(run))
            parts.append(value)
            run = []
        size += 8 + n
    total = len(payload) + size
    if total > WIRE_MAX or total > pyro_config.MAX_MESSAGE_SIZE:
        return None  # (SendingMessage says what is wrong)
    header = _result_header(seq, serializer_id, len(payload), size, corr)
    run.append(payload)
    if parts:
        parts[0] = header + parts[0]
        parts.append(b"".join(run))
    else:
        parts.append(header + b"".join(run))
    return Gather(parts, _HEADER.size + total)


def annotate(a: np.ndarray, outgoing: str) -> dict[str, Any] | None:
    """The marker for a large contiguous array sent as an annotation, or None to send inline.

    ``outgoing`` is ``"request"`` (client side) or ``"response"`` (server side).
    """
    if a.nbytes < INLINE_MAX or not state.fast:
        return None
    if outgoing == "request":
        if not _server_is_fast():
            return None
        _tls.annotated = True
        return annotate_into(current_context.annotations, a)
    if not peer_is_fast():
        return None
    return annotate_into(current_context.response_annotations, a)


# -- installing ----------------------------------------------------------------------------------
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
    return state.fast


def install() -> None:
    """Put pyroinst's message path into Pyro5 (idempotent).

    Only with a tested Pyro5 version (see ``compat``); otherwise Pyro5 is left as it is,
    and arrays travel inline in the payload. With PYROINST_FASTWIRE=0 the message path
    (and its checks, ``pyroinst.preproof``) is in, but the fast array path is neither
    announced nor used.
    """
    if state.installed:
        return
    wanted = compat.fastwire_wanted()
    if not compat.pyro5_tested():
        return
    # The message path (and with it the checks of pyroinst.preproof) goes in with every
    # tested Pyro5; PYROINST_FASTWIRE=0 only keeps the fast array path from being announced.
    state.fast = wanted
    protocol.SendingMessage = SendingMessage
    protocol.recv_stub = recv_stub
    socketutil.send_data = send_data
    Pyro5.client.Proxy._pyroInvoke = _pyro_invoke
    Pyro5.client.Proxy._Proxy__pyroCreateConnection = _create_connection  # type: ignore[attr-defined]
    state.installed = True


class FastwireDaemon:
    """Mixin for Pyro5 daemons: says in its handshake that it understands annotated
    arrays (when the fast path is in), and keeps nothing of a request once it is answered.

    Pyro5 leaves a request's annotations (and the last response's) on the worker thread
    until that thread's next request; with uploads in them, an idle connection would
    keep hundreds of megabytes alive.
    """

    def _handshake(self, conn: Any, denied_reason: Any = None) -> Any:
        previous = getattr(_tls, "handshaking", False)
        _tls.handshaking = state.fast
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

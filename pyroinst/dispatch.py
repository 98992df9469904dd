"""The common request, answered on a short path: one method call, nothing special.

Pyro5's ``Daemon.handleRequest`` handles every kind of message (pings, batches, oneway
calls, blobs, iterators) in one long function, and pyroinst's daemons wrap it twice more
(the token protocol, the fast array path). Almost every request a lab sends is the plain
kind: one call, answered with a value. ``DispatchDaemon.handleRequest`` receives the
message itself and answers those directly, in the order and with the context Pyro5 gives
them (``current_context``: client, address, sequence, annotations, flags, serializer,
correlation id); anything else (a ping, a batch, a oneway call, a blob, an iterator
returned) goes to Pyro5's own code with the message already received. Errors are
answered exactly as Pyro5 answers them (its ``_sendExceptionResponse``).

Used only with the Pyro5 versions pyroinst is tested with (``compat``); with any other,
Pyro5's own path serves everything. It follows Pyro5 5.17 (5.15 and 5.16 differ in one
point: there a property whose value is an iterator is not streamed, here it is).
"""

from __future__ import annotations

import collections.abc
import inspect
import random
import uuid
from typing import Any

import numpy as np
from Pyro5 import config as pyro_config
from Pyro5 import errors, protocol, serializers, socketutil
from Pyro5 import server as pyro_server
from Pyro5.callcontext import current_context

from . import compat
from .auth import PROOF_ANNOTATION
from .connections import LiveConnection
from .direct import ANSWERED as _ANSWERED
from .fastwire import array_reply as _array_reply
from .fastwire import arrays_reply as _arrays_reply
from .receiving import recv_stub as _recv_stub
from .wire import HEADER as _HEADER
from .wire import INLINE_MAX
from .wire import local as _tls

__all__ = ["DispatchDaemon"]

_INVOKE = protocol.MSG_INVOKE
_ACCEPTED = [protocol.MSG_INVOKE, protocol.MSG_PING]
# Request flags the short path handles (any other goes to Pyro5's code).
_PLAIN_FLAGS = protocol.FLAGS_CORR_ID
_get_attribute = pyro_server._get_attribute
_unpack_weakref = pyro_server._unpack_weakref
_get_property = pyro_server._get_exposed_property_value
_set_property = pyro_server._set_exposed_property_value
_by_id = serializers.serializers_by_id
_Iterator = collections.abc.Iterator
_isgenerator = inspect.isgenerator
_UUID = uuid.UUID
_new_uuid = uuid.UUID.__new__
_set = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_random_bits = random.getrandbits
_int_bytes = int.to_bytes
# uuid4's version and variant bits.
_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (4 << 76) | (0x8000 << 48)
_RESULT = protocol.MSG_RESULT
_CORR_ID = protocol.FLAGS_CORR_ID
_PYRO = b"PYRO"
_VERSION = protocol.PROTOCOL_VERSION
_MAGIC = protocol._magic_number
_NO_CORR_ID = protocol._empty_correlation_id
_SMALL = INLINE_MAX - _HEADER.size


def _uuid4() -> uuid.UUID:
    """A version 4 UUID, as ``uuid.uuid4()`` makes, without UUID's general-purpose
    ``__init__`` (a new one per request). A correlation id tells requests apart in logs,
    it is no secret: its random bits come from ``random``, not the system's source."""
    value = _new_uuid(_UUID)
    _set(value, "int", (_random_bits(128) & _V4_CLEAR) | _V4_SET)
    _set(value, "is_safe", _SAFE_UNKNOWN)
    return value


# Values a method returns most, which are no iterators (the abc check is slow).
_NOT_ITERATORS = frozenset(
    {type(None), int, float, bool, str, bytes, dict, list, tuple, np.ndarray}
)

#: (servant class, method name) -> the exposed function and whether it is a Pyro5
#: callback: Pyro5's lookup, made once.
_methods: dict[tuple[type, str], tuple[Any, bool]] = {}
_METHODS_MAX = 4096


def _is_callback(method: Any) -> bool:
    # (A function without the attribute makes getattr raise and format an AttributeError
    # inside: looked at once per method, not per call.)
    return bool(getattr(method, "_pyroCallback", False))


def _exposed_method(obj: Any, name: str) -> tuple[Any, bool]:
    """Pyro5's ``_get_attribute(obj, name)`` (the same result and errors) and whether it
    is a Pyro5 callback; for a device's servant, whose exposed methods are its class's,
    remembered per class."""
    cls = type(obj)
    known = _methods.get((cls, name))
    if known is not None and name not in obj.__dict__:
        return known[0].__get__(obj, cls), known[1]
    method = _get_attribute(obj, name)
    callback = _is_callback(method)
    func = getattr(method, "__func__", None)
    if (
        func is not None
        and getattr(method, "__self__", None) is obj
        and getattr(cls, "_pyroinst_servant", False)
        and getattr(cls, name, None) is func
        and len(_methods) < _METHODS_MAX
    ):
        _methods[(cls, name)] = (func, callback)
    return method, callback


class DispatchDaemon:
    """Mixin for pyroinst's device daemon: plain calls on the short path (see module)."""

    _pyroinst_short = compat.pyro5_tested()
    #: Idle connections wait in one thread (pyroinst.front), which answers what arrives.
    _pyroinst_front = _pyroinst_short

    def handleRequest(self, conn: Any) -> Any:  # noqa: N802 - Pyro5's name
        """Answer one request: plain calls here, everything else by Pyro5's code."""
        if (
            not self._pyroinst_short
            or pyro_config.LOGWIRE
            or getattr(conn, "_pyroinst_challenge", None) is not None
        ):
            return super().handleRequest(conn)  # type: ignore[misc]
        # pyroinst's receive (bounded, arrays received in place), as Pyro5's code would
        # call it through protocol.recv_stub; a message with a proof in it goes there
        # (pyroinst.auth refuses a second proof).
        msg = _recv_stub(conn, _ACCEPTED)
        if (
            msg.type != _INVOKE
            or msg.flags & ~_PLAIN_FLAGS
            or (msg.annotations and PROOF_ANNOTATION in msg.annotations)
        ):
            _tls.replay = msg  # pyroinst's recv_stub hands it to Pyro5's code, unread again
            return super().handleRequest(conn)  # type: ignore[misc]
        self._pyroinst_plain(conn, msg)
        return None

    def _pyroinst_plain(self, conn: Any, msg: Any) -> None:
        """Answer a plain call (``msg``: received, its type and flags checked)."""
        try:
            self._pyroinst_answer(conn, msg)
        finally:
            # What FastwireDaemon does after each request: keep nothing of it.
            current_context.annotations = {}
            current_context.response_annotations = {}
            _tls.incoming = None

    def _pyroinst_answer(self, conn: Any, msg: Any) -> None:
        seq = msg.seq
        serializer_id = msg.serializer_id
        ctx = current_context
        is_callback = False
        made = None  # the correlation id made here (its bytes are known without UUID.bytes)
        try:
            if msg.flags & protocol.FLAGS_CORR_ID:
                ctx.correlation_id = _UUID(bytes=msg.corr_id)
            else:
                ctx.correlation_id = made = _uuid4()
            serializer = _by_id[serializer_id]
            obj_id, method, vargs, kwargs = serializer.loadsCall(msg.data)
            ctx.client = conn
            peer = conn.__dict__.get("_pyroinst_peer", False)
            if peer is False:
                # The peer's address does not change: asked once per connection.
                try:
                    peer = conn.sock.getpeername()
                except OSError:
                    peer = None
                conn._pyroinst_peer = peer
            ctx.client_sock_addr = peer
            ctx.seq = seq
            ctx.annotations = msg.annotations
            ctx.msg_flags = msg.flags
            ctx.serializer_id = serializer_id
            del msg
            obj = _unpack_weakref(self.objectsById.get(obj_id))  # type: ignore[attr-defined]
            if obj is None:
                raise errors.DaemonError("unknown object")
            if isinstance(obj, type):
                obj = self._getInstance(obj, conn)  # type: ignore[attr-defined]
            if method == "__getattr__":
                data = _get_property(obj, vargs[0])
            elif method == "__setattr__":
                data = _set_property(obj, vargs[0], vargs[1])
            else:
                method, is_callback = _exposed_method(obj, method)
                _tls.answering = conn  # a stream read may be answered from another thread
                try:
                    data = method(*vargs, **kwargs)
                except Exception as xv:
                    self.methodcall_error_handler(  # type: ignore[attr-defined]
                        self, ctx.client_sock_addr, method, vargs, kwargs, xv
                    )
                    raise
                finally:
                    _tls.answering = None
                if data is _ANSWERED:
                    return  # (pyroinst.direct: the publishing thread sent the answer)
            if type(data) not in _NOT_ITERATORS and (
                isinstance(data, _Iterator) or _isgenerator(data)
            ):
                # An iterator: Pyro5's item streaming (or its refusal), as Pyro5 does it.
                self._pyroinst_iterator(conn, seq, serializer, data)
                return
            payload = serializer.dumps(data)
            answer = ctx.response_annotations
            extra = self.annotations()  # type: ignore[attr-defined]
            if extra:
                answer.update(extra)
            ctx.response_annotations = {}
            size = len(payload)
            corr = ctx.correlation_id
            if answer or size >= _SMALL or pyro_config.COMPRESSION:
                reply = None
                if answer and not pyro_config.COMPRESSION:
                    # Large arrays (a trace, an image, a stream's batch): the message made
                    # directly.
                    reply = (_array_reply if len(answer) == 2 else _arrays_reply)(
                        seq,
                        serializer.serializer_id,
                        payload,
                        answer,
                        (_int_bytes(made.int, 16, "big") if corr is made else corr.bytes)
                        if corr
                        else None,
                    )
                if reply is None:
                    # protocol.SendingMessage is looked up now: pyroinst's (scatter/gather
                    # for large arrays) once fastwire is installed.
                    reply = protocol.SendingMessage(
                        _RESULT, 0, seq, serializer.serializer_id, payload, answer
                    ).data
            else:
                # What SendingMessage makes of a small reply without annotations: the header
                # (with the call's correlation id, as the driver left it) and the payload.
                reply = (
                    _HEADER.pack(
                        _PYRO,
                        _VERSION,
                        _RESULT,
                        serializer.serializer_id,
                        _CORR_ID if corr else 0,
                        seq,
                        size,
                        0,
                        (_int_bytes(made.int, 16, "big") if corr is made else corr.bytes)
                        if corr
                        else _NO_CORR_ID,
                        0,
                        _MAGIC,
                    )
                    + payload
                )
            del payload
            if type(conn) is LiveConnection:
                socketutil.send_data(conn.sock, reply)  # what its send does, one call fewer
            else:
                conn.send(reply)
        except Exception as xv:
            pyro_msg = getattr(xv, "pyroMsg", None)
            if pyro_msg:
                seq, serializer_id = pyro_msg.seq, pyro_msg.serializer_id
            if not isinstance(xv, errors.ConnectionClosedError) and (
                isinstance(xv, errors.SerializeError)
                or not isinstance(xv, errors.CommunicationError)
            ):
                tblines = errors.format_traceback(detailed=pyro_config.DETAILED_TRACEBACK)
                self._sendExceptionResponse(conn, seq, serializer_id, xv, tblines)  # type: ignore[attr-defined]
            if is_callback or isinstance(xv, (errors.CommunicationError, errors.SecurityError)):
                raise

    def _pyroinst_iterator(self, conn: Any, seq: int, serializer: Any, data: Any) -> None:
        is_stream, stream_id = self._streamResponse(data, conn)  # type: ignore[attr-defined]
        assert is_stream
        exc = errors.ProtocolError("result of call is an iterator")
        ann = {"STRM": stream_id.encode()} if stream_id else {}
        self._sendExceptionResponse(  # type: ignore[attr-defined]
            conn,
            seq,
            serializer.serializer_id,
            exc,
            None,
            annotations=ann,
            flags=protocol.FLAGS_ITEMSTREAMRESULT,
        )

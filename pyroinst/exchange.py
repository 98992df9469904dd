"""One call's messages on a DeviceProxy's connection: the short path of a plain call.

Pyro5's ``Proxy._pyroInvoke`` reads the proxy's connection, sequence number and owner
several times per call; on a ``DeviceProxy`` each of those is a lookup of the calling
thread's slot (``pyroinst.perthread``). ``exchange`` does the same exchange with the slot
looked up once: encode, send, receive, check the sequence and serializer, decode, raise
a remote exception, exactly as Pyro5 does, and release the connection on a
communication error (so a late reply is never taken for the next one). Calls Pyro5 treats
specially (oneway methods, blobs, raw wire responses, wire logging) and any Pyro5 version
pyroinst is not tested with go through Pyro5's own ``_pyroInvoke``.
"""

from __future__ import annotations

from typing import Any

import Pyro5.client
from Pyro5 import config as pyro_config
from Pyro5 import errors, protocol, serializers
from Pyro5.callcontext import current_context

from . import compat
from .fastwire import drop_request_annotations
from .perthread import Slot
from .receiving import recv_stub as _recv_stub
from .sending import SendingMessage
from .wire import HEADER as _HEADER
from .wire import INLINE_MAX
from .wire import local as _tls
from .wire import state as _wire

__all__ = ["exchange", "SHORT"]

#: True when the short path may be used (a tested Pyro5).
SHORT = compat.pyro5_tested()

_serializers = serializers.serializers
_INVOKE = protocol.MSG_INVOKE
_ACCEPT = [protocol.MSG_RESULT]
_STREAM = protocol.FLAGS_ITEMSTREAMRESULT
_EXCEPTION = protocol.FLAGS_EXCEPTION
_Blob = Pyro5.client.SerializedBlob
_PYRO = b"PYRO"
_VERSION = protocol.PROTOCOL_VERSION
_MAGIC = protocol._magic_number
_NO_CORR_ID = protocol._empty_correlation_id
_SMALL = INLINE_MAX - _HEADER.size


def special(proxy: Any, methodname: str, vargs: Any) -> bool:
    """True for a call Pyro5's own path must make (see the module)."""
    return bool(
        not SHORT
        or pyro_config.LOGWIRE
        or proxy._pyroRawWireResponse
        or methodname in proxy._pyroOneway
        or (vargs and isinstance(vargs[0], _Blob))
    )


def exchange(
    proxy: Any, slot: Slot, methodname: str, vargs: Any, kwargs: Any, flags: int, object_id: Any
) -> Any:
    """Pyro5's ``_pyroInvoke`` for a connected DeviceProxy, its thread's ``slot`` given."""
    ctx = current_context
    ctx.response_annotations = {}
    conn = slot.box.conn
    serializer = _serializers[proxy._pyroSerializer or pyro_config.SERIALIZER]
    try:
        data = serializer.dumpsCall(object_id or conn.objectId, methodname, vargs, kwargs)
        seq = slot.seq = (slot.seq + 1) & 0xFFFF
        annotations = ctx.annotations
        peer_max = getattr(_tls, "peer_max", None)
        size = len(data)
        if (
            annotations
            or size >= _SMALL
            or ctx.correlation_id
            or pyro_config.COMPRESSION
            or (peer_max is not None and size > peer_max)
            or size > pyro_config.MAX_MESSAGE_SIZE
        ):
            message = SendingMessage(
                _INVOKE, flags, seq, serializer.serializer_id, data, annotations=annotations
            ).data
        else:
            # What SendingMessage makes of a small call without annotations (its checks
            # all pass): the header and the payload.
            message = (
                _HEADER.pack(
                    _PYRO,
                    _VERSION,
                    _INVOKE,
                    serializer.serializer_id,
                    flags & ~protocol.FLAGS_COMPRESSED,
                    seq,
                    size,
                    0,
                    _NO_CORR_ID,
                    0,
                    _MAGIC,
                )
                + data
            )
        del data
        try:
            conn.send(message)
            del message
            # pyroinst's receive (pyroinst.auth's wrapper adds nothing for a call's reply).
            receive = _recv_stub if _wire.installed else protocol.recv_stub
            msg = receive(conn, _ACCEPT)
            if msg.seq != seq:
                raise errors.ProtocolError(
                    f"invoke: reply sequence out of sync, got {msg.seq} expected {seq}"
                )
            if msg.serializer_id != serializer.serializer_id:
                raise errors.SerializeError(f"invalid serializer in response: {msg.serializer_id}")
            if msg.annotations:
                ctx.response_annotations = msg.annotations
            data = serializer.loads(msg.data)
            if msg.flags & _STREAM:
                stream_id = bytes(msg.annotations.get("STRM", b"")).decode()
                if not stream_id:
                    raise errors.ProtocolError(
                        "result of call is an iterator, but the server is not configured "
                        "to allow streaming"
                    )
                return Pyro5.client._StreamResultIterator(stream_id, proxy)
            if msg.flags & _EXCEPTION:
                try:
                    raise data
                finally:
                    del data
            return data
        except (errors.CommunicationError, KeyboardInterrupt):
            # As Pyro5: a connection that failed mid-call is dropped.
            proxy._pyroRelease()
            raise
    finally:
        # What fastwire's wrapper of _pyroInvoke does after each call.
        _tls.incoming = None
        if getattr(_tls, "annotated", False):
            drop_request_annotations()

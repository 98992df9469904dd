"""Receiving Pyro5 messages: large ones straight into the buffer their arrays wrap.

``recv_stub`` (Pyro5's, replaced) receives a large message with ``recv_into`` into one
writeable, uninitialised buffer, checks what a peer may send (``pyroinst.preproof``:
marshal refused on pyroinst's daemons, inflation bounded, a handshake answer only in the
serializer of the request), notes the handshake's announcement of the fast path, and
keeps a message's array annotations for the thread that decodes it. See
``pyroinst.fastwire``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
from typing import Any

import numpy as np
import Pyro5.errors
from Pyro5 import config as pyro_config
from Pyro5 import protocol, socketutil

from . import preproof
from .errors import MessageRefused, NotSerializableError
from .receivepool import MIN_POOLED as _MIN_POOLED
from .receivepool import receive_pool
from .wire import (
    ANNOTATION_HEADER,
    CONNECT_MAX,
    FIRST_HEAD,
    FIRST_PAD,
    FLAG,
    INLINE_MAX,
)
from .wire import ARRAY_PREFIX as _ARRAY_PREFIX
from .wire import FIRST_KEY as _FIRST_KEY
from .wire import FIRST_PAD_KEY as _FIRST_PAD_KEY
from .wire import RETRY as _RETRY
from .wire import is_ours as _is_ours
from .wire import local as _tls
from .wire import peer as _peer

__all__ = [
    "recv_stub",
    "received_array_keys",
    "forget_incoming",
    "incoming_array",
    "known_dtype",
    "annotated_array",
]

log = logging.getLogger(__name__)
_pool = receive_pool()
_empty = np.empty
_Socket = socket.socket
_readv = os.readv
_BYTE = np.uint8
_frombuffer = np.frombuffer
_WAITALL = socket.MSG_WAITALL if socketutil.USE_MSG_WAITALL else 0
_SOL_SOCKET = socket.SOL_SOCKET
_SO_RCVLOWAT = getattr(socket, "SO_RCVLOWAT", 0)
#: A large message's receive is woken when this many bytes have come (see _receive_big)...
LOW_MARK = 256 * 1024
#: ...if it has this many still to come (and the socket is a plain blocking TCP socket).
_LOW_FROM = 4 * LOW_MARK if _SO_RCVLOWAT and _WAITALL else 2**63


def _receive_big(connection: Any, sock: socket.socket, size: int) -> Any:
    """Receive exactly ``size`` bytes into one writeable, uninitialised buffer (a memoryview)."""
    # Uninitialised memory (bytearray(size) would first write zeros over all of it), and
    # for a large message memory used before: see receivepool.
    view = _pool.lend(size) if size >= _MIN_POOLED else memoryview(_empty(size, _BYTE))
    buf = view
    got = 0
    ahead = connection.__dict__.get("_pyroinst_ahead")
    if ahead is not None:  # what the header's read took of this message
        connection._pyroinst_ahead = None
        got = min(len(ahead), size)
        view[:got] = ahead[:got]
        if len(ahead) > size:
            connection._pyroinst_ahead = ahead[size:]
    # The rest in one wait where the socket allows (as Pyro5 receives): woken once, not
    # once per segment. (TLS sockets take no flags.)
    flags = 0
    blocking = False  # (a blocking socket's EAGAIN is its kernel timeout: see set_timeout)
    if type(sock) is _Socket:
        if sock.gettimeout() is None:
            flags = _WAITALL
            blocking = True
        elif got < size:
            # With a timeout CPython polls before each receive, though the rest has most
            # often arrived with the header: what is there is taken at once.
            try:
                got += _readv(sock.fileno(), [view[got:]])
            except BlockingIOError:
                pass
            except OSError as exc:
                raise Pyro5.errors.ConnectionClosedError(
                    f"receiving: connection lost: {exc}"
                ) from None
    try:
        if blocking and size - got >= _LOW_FROM:
            # Most of a large message woken once per LOW_MARK bytes, not once per segment
            # (each wake-up costs the sender a cross-core interrupt: a fifth of its time
            # streaming on a virtual machine). The mark goes back to 1 for the last
            # LOW_MARK bytes: it must never exceed what is still to come, or the kernel
            # would not wake this read for the message's tail. A link slower than a mark
            # per timeout is no timeout: the kernel ends a wait at the timeout with what
            # came, and says "timeout" only when nothing did.
            sock.setsockopt(_SOL_SOCKET, _SO_RCVLOWAT, LOW_MARK)
            try:
                got = _fill(sock, view, got, size - LOW_MARK, flags)
            finally:
                with contextlib.suppress(OSError):  # (an error from the read goes on)
                    sock.setsockopt(_SOL_SOCKET, _SO_RCVLOWAT, 1)
        while got < size:
            try:
                n = sock.recv_into(view[got:], size - got, flags)
            except OSError as exc:
                if exc.errno in _RETRY:
                    if blocking and type(exc) is BlockingIOError:
                        raise _timeout_error() from None  # (a blocking socket's timeout)
                    time.sleep(0.001)
                    continue
                raise
            if not n:
                raise _Short(got)
            got += n
    except _Short as short:
        err = Pyro5.errors.ConnectionClosedError("receiving: not enough data")
        err.partialData = buf[: short.got]  # type: ignore[attr-defined]
        raise err from None
    except TimeoutError:
        raise Pyro5.errors.TimeoutError("receiving: timeout") from None
    except Pyro5.errors.PyroError:
        raise
    except OSError as exc:
        raise Pyro5.errors.ConnectionClosedError(f"receiving: connection lost: {exc}") from None
    return buf


class _Short(Exception):
    """The connection ended after ``got`` bytes of a message."""

    def __init__(self, got: int) -> None:
        super().__init__(got)
        self.got = got


def _fill(sock: socket.socket, view: memoryview, got: int, stop: int, flags: int) -> int:
    """Receive into ``view`` from ``got`` up to ``stop`` on a blocking socket; returns
    ``stop``."""
    while got < stop:
        try:
            n = sock.recv_into(view[got:stop], stop - got, flags)
        except OSError as exc:
            if exc.errno in _RETRY:
                if type(exc) is BlockingIOError:
                    raise _timeout_error() from None  # (a blocking socket's timeout)
                continue  # (interrupted)
            raise
        if not n:
            raise _Short(got)
        got += n
    return got


_HEADER = protocol._header_size
#: The most a header's read takes (see _read): a small message's whole.
READ_AHEAD = 16 * 1024
_COPY_AHEAD = 4096
_validate = protocol.ReceivingMessage.validate
_unpack_annotation = ANNOTATION_HEADER.unpack_from
_unpack_length = struct.Struct("!I").unpack_from
_FIRST_HEAD_SIZE = len(FIRST_HEAD)
_ONE_ARRAY = _FIRST_HEAD_SIZE + 4  # the annotations' bytes besides the array's
_PAD_END = 8 + len(FIRST_PAD)
_VERSION_BYTES = protocol._protocol_version_bytes
_ReceivingMessage = protocol.ReceivingMessage
_INVOKE_OR_RESULT = (protocol.MSG_INVOKE, protocol.MSG_RESULT)
_HANDSHAKE_ANSWERS = (protocol.MSG_CONNECTOK, protocol.MSG_CONNECTFAIL)


def _read(connection: Any, sock: socket.socket, size: int, check: int = 0) -> Any:
    """``size`` bytes of ``connection``: one recv when they are there (most messages),
    else Pyro5's receive loop for the rest. ``check``: a header; its first bytes are
    validated as soon as they are in (a peer that is no Pyro5 is refused at once).

    A header's read takes up to READ_AHEAD bytes, whatever has arrived: for most messages
    the whole of it, so its payload needs no second system call (each one lets another
    thread take the interpreter, and with many threads it may not give it back soon).
    What it took beyond the header waits on the connection for the next read.
    """
    ahead = connection.__dict__.get("_pyroinst_ahead")
    if ahead is not None:
        connection._pyroinst_ahead = None
        have = len(ahead)
        if have > size:
            connection._pyroinst_ahead = ahead[size:]
            chunk = bytes(ahead[:size])
        elif have == size:
            chunk = bytes(ahead)
        else:
            chunk = bytes(ahead) + _rest(connection, sock, size - have)
        if check and (chunk[:4] != b"PYRO" or chunk[4:6] != _VERSION_BYTES):
            _validate(chunk[:check])
        return chunk
    try:
        chunk = sock.recv(READ_AHEAD if check else size)
    except TimeoutError:
        raise Pyro5.errors.TimeoutError("receiving: timeout") from None
    except BlockingIOError:
        if sock.gettimeout() is None:
            raise _timeout_error() from None
        chunk = b""  # Pyro5's loop retries
    except OSError:
        chunk = b""  # Pyro5's loop retries or says what went wrong
    got = len(chunk)
    if got >= size:
        if got > size:
            # Most often the rest of a small message (a copy of it is what its read
            # returns); a large message's part stays a view, copied once, into its buffer.
            rest = got - size
            connection._pyroinst_ahead = (
                chunk[size:] if rest < _COPY_AHEAD else memoryview(chunk)[size:]
            )
            chunk = chunk[:size]
        if check and (chunk[:4] != b"PYRO" or chunk[4:6] != _VERSION_BYTES):
            _validate(chunk[:check])  # (a whole header is checked by ReceivingMessage)
        return chunk
    if check:
        if got < check:
            chunk += _rest(connection, sock, check - got)
            got = check
        _validate(chunk[:check])
    return chunk + _rest(connection, sock, size - got) if chunk else _rest(connection, sock, size)


def _rest(connection: Any, sock: socket.socket, size: int) -> bytes:
    """The next ``size`` bytes of ``connection``, waited for: Pyro5's receive loop, or ours
    on a blocking socket (its timeout may be the kernel's, see ``set_timeout``: Pyro5's
    loop would retry it without end)."""
    if type(sock) is _Socket and sock.gettimeout() is None:
        return bytes(_receive_big(connection, sock, size))
    return connection.recv(size)  # type: ignore[no-any-return]


def _timeout_error() -> Pyro5.errors.TimeoutError:
    return Pyro5.errors.TimeoutError("receiving: timeout")


def recv_stub(connection: Any, accepted_msgtypes: Any = None) -> protocol.ReceivingMessage:
    """Pyro5's recv_stub, receiving a large payload with ``recv_into`` (see _receive_big)."""
    replay = _tls.__dict__.get("replay")
    if replay is not None:
        # The message pyroinst.dispatch received and handed to Pyro5's code: it is next.
        _tls.replay = None
        return replay  # type: ignore[no-any-return]
    sock = getattr(connection, "sock", None)
    live = sock is not None and getattr(connection, "_live", True)
    if live:
        header = _read(connection, sock, _HEADER, 6)
    else:
        header = connection.recv(6)  # a handshake's buffered message (pyroinst.connections)
        protocol.ReceivingMessage.validate(header)
        header += connection.recv(_HEADER - 6)
    try:
        msg = _ReceivingMessage(header)
    except Pyro5.errors.ProtocolError as exc:
        # Oversized or malformed: the connection is dropped; the log says why.
        log.warning(
            "refused a message from %s: %s (max_message_size is %d bytes)",
            _peer(connection),
            exc,
            pyro_config.MAX_MESSAGE_SIZE,
        )
        raise
    mtype = msg.type
    if accepted_msgtypes and mtype not in accepted_msgtypes:
        err = "invalid msg type {:d} received (expected: {:s})".format(
            mtype, ",".join(str(t) for t in accepted_msgtypes)
        )
        # A refused connection, not a fault of this server: a warning, not an error.
        log.warning("%s from %s", err, _peer(connection))
        exc = Pyro5.errors.ProtocolError(err)
        exc.pyroMsg = msg  # type: ignore[attr-defined]
        raise exc
    size = msg.annotations_size + msg.data_size
    if mtype == protocol.MSG_CONNECT and size > CONNECT_MAX:
        # Before its handshake a client is nobody: it gets no large buffer.
        log.warning("refused a handshake of %d bytes from %s", size, _peer(connection))
        raise Pyro5.errors.ProtocolError(f"handshake of {size} bytes refused")
    if msg.serializer_id == preproof.MARSHAL and getattr(connection, "_pyroinst_strict", False):
        _refuse_marshal(connection, msg)
    answer_to = None
    if mtype in _HANDSHAKE_ANSWERS:
        answer_to = getattr(_tls, "connect_serializer", None)
        if answer_to is not None:
            _check_answer_header(connection, msg, answer_to)
    if not live:
        payload = connection.recv(size)
    elif size >= INLINE_MAX:
        payload = _receive_big(connection, sock, size)
    else:
        ahead = connection.__dict__.get("_pyroinst_ahead")
        if ahead is not None and len(ahead) == size:
            # The header's read took exactly this payload (most messages): _read's first case.
            connection._pyroinst_ahead = None
            payload = bytes(ahead)
        else:
            payload = _read(connection, sock, size)
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
    elif msg.annotations_size and len(payload) == size:
        if mtype in _INVOKE_OR_RESULT:
            _add_and_take(msg, payload)  # (its arrays' annotations go to this thread)
            return msg
        _add_annotated(msg, payload)
    elif len(payload) == size:
        msg.data = payload  # what add_payload does for a message without annotations
    else:
        msg.add_payload(payload)  # (it says what is wrong)
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
    if mtype in _INVOKE_OR_RESULT:
        if annotations:
            _take_arrays(annotations)
        else:
            _tls.incoming, _tls.received = None, ()
    elif annotations and FLAG in annotations:
        if mtype == protocol.MSG_CONNECT:
            connection._pyroinst_fast = True  # server side: the client understands
        elif mtype == protocol.MSG_CONNECTOK:
            connection._pyroinst_server_fast = True  # client side: the server does
        del annotations[FLAG]
    return msg


def _add_annotated(msg: protocol.ReceivingMessage, payload: Any) -> None:
    """Pyro5's ``add_payload`` for an uncompressed message with annotations of the right
    length: the same annotations (memoryviews of the payload) and errors, parsed with
    ``struct`` instead of slicing each header."""
    size = msg.annotations_size
    view = memoryview(payload)
    annotations = {}
    i = 0
    while i < size:
        if i + 8 > size:
            raise Pyro5.errors.ProtocolError("annotation chunk length exceeds remaining data")
        key, length = _unpack_annotation(view, i)
        end = i + 8 + length
        if end > size:
            raise Pyro5.errors.ProtocolError("annotation chunk length exceeds remaining data")
        annotations[key.decode("ascii")] = view[i + 8 : end]
        i = end
    msg.annotations = annotations
    msg.data = view[size:]


def _add_and_take(msg: protocol.ReceivingMessage, payload: Any) -> None:
    """``_add_annotated`` and ``_take_arrays`` (a call or a result): the arrays'
    annotations go to this thread, the others to ``msg.annotations``; one array's layout
    is read in one step."""
    size = msg.annotations_size
    view = memoryview(payload)
    if size > _ONE_ARRAY and view[:_FIRST_HEAD_SIZE] == FIRST_HEAD:
        # One array (most messages that have any), as SendingMessage lays it out.
        if _ONE_ARRAY + _unpack_length(view, _FIRST_HEAD_SIZE)[0] == size:
            msg.annotations = {}
            msg.data = view[size:]
            _tls.incoming = {_FIRST_PAD_KEY: view[8:_PAD_END], _FIRST_KEY: view[_ONE_ARRAY:size]}
            _tls.received = [_FIRST_KEY]
            return
    # Several arrays, or others' annotations too (rare): parsed, then ours taken.
    _add_annotated(msg, payload)
    _take_arrays(msg.annotations)


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
    # (annotated_array's steps, inline: every received array comes this way)
    incoming = _tls.incoming
    view = incoming.get(key) if incoming else None
    if view is None:
        raise NotSerializableError(f"array data {key!r} missing from the message")
    dt = _dtypes.get(dtype) if type(dtype) is str else None
    a = _frombuffer(view, dt if dt is not None else known_dtype(dtype))
    if type(shape) is not list or len(shape) != 1 or shape[0] != a.size:
        a = a.reshape(tuple(map(int, shape)))
    return a if a.flags.writeable else a.copy()


def annotated_array(annotations: dict[str, Any], key: str, dtype: str, shape: list[int]) -> Any:
    """Wrap the annotation ``key`` as an array (a writeable view when the buffer allows)."""
    view = annotations.get(key)
    if view is None:
        raise NotSerializableError(f"array data {key!r} missing from the message")
    a = np.frombuffer(view, known_dtype(dtype)).reshape(tuple(map(int, shape)))
    return a if a.flags.writeable else a.copy()


def known_dtype(dtype: Any) -> np.dtype:
    """``np.dtype(dtype)`` for an array being received (NotSerializableError for object
    dtypes); the dtype strings seen are kept (np.dtype parses its argument every time)."""
    dt = _dtypes.get(dtype) if type(dtype) is str else None
    if dt is None:
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise NotSerializableError("refusing to decode an array of object dtype")
        if type(dtype) is str and len(_dtypes) < 256:
            _dtypes[dtype] = dt
    return dt


#: dtype strings seen (a few per program), to their dtypes: np.dtype() parses each time.
_dtypes: dict[str, np.dtype] = {}

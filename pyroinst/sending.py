"""Sending Pyro5 messages: large parts as a list of buffers, sent with scatter/gather.

``SendingMessage`` keeps a large message's annotations and payload as separate buffers
(``Gather``) instead of joining them into new bytes; ``send_data`` sends such a list with
``sendmsg``, and sends with memoryview offsets when the socket has a timeout (Pyro5's own
loop copies the remainder after every partial send, which makes large messages
quadratic). See ``pyroinst.fastwire`` for how they go into Pyro5.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from typing import Any

import Pyro5.errors
from Pyro5 import config as pyro_config
from Pyro5 import protocol
from Pyro5.callcontext import current_context

from .wire import ANNOTATION_HEADER as _ANNOTATION_HEADER
from .wire import FLAG, INLINE_MAX, WIRE_MAX, state
from .wire import HEADER as _HEADER
from .wire import RETRY as _RETRY
from .wire import local as _tls
from .wire import too_large as _too_large

__all__ = [
    "Gather",
    "SendingMessage",
    "send_data",
    "expect_peer_limit",
    "set_timeout",
    "timeout_of",
]


# -- sending -------------------------------------------------------------------------------
_SMALL = INLINE_MAX - _HEADER.size
_HANDSHAKES = frozenset({protocol.MSG_CONNECT, protocol.MSG_CONNECTOK})
_NO_CORR_ID = protocol._empty_correlation_id
#: Annotations of this many bytes or more are sent from their own memory (scatter/gather).
SEPARATE = 4096
_SEPARATE = SEPARATE
_Socket = socket.socket
_write = os.write
_TIMEVAL = struct.Struct("@ll")  # struct timeval (Linux)
#: Where set_timeout uses the kernel's timeouts (their option values are Linux's here).
_KERNEL_TIMEOUTS = sys.platform.startswith("linux")


class Gather:
    """An outgoing message as a list of buffers, sent without joining them."""

    __slots__ = ("parts", "nbytes")

    def __init__(self, parts: list[Any], nbytes: int | None = None) -> None:
        self.parts = parts
        self.nbytes = sum(memoryview(p).nbytes for p in parts) if nbytes is None else nbytes

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
        size = len(payload)
        if (
            not annotations
            and size < _SMALL
            and size <= pyro_config.MAX_MESSAGE_SIZE
            and msgtype not in _HANDSHAKES
            and (msgtype != protocol.MSG_INVOKE or size <= (_tls.peer_max or WIRE_MAX))
        ):
            # Most messages: small, no annotations, every check below passes.
            correlation = current_context.correlation_id
            if correlation:
                flags |= protocol.FLAGS_CORR_ID
                self.corr_id = correlation.bytes
            else:
                self.corr_id = _NO_CORR_ID
            self.flags = flags
            self.data = (
                _HEADER.pack(
                    b"PYRO",
                    protocol.PROTOCOL_VERSION,
                    msgtype,
                    serializer_id,
                    flags,
                    seq,
                    size,
                    0,
                    self.corr_id,
                    0,
                    protocol._magic_number,
                )
                + payload
            )
            return
        if state.fast and (
            (msgtype == protocol.MSG_CONNECT and getattr(_tls, "connecting", False))
            or (msgtype == protocol.MSG_CONNECTOK and getattr(_tls, "handshaking", False))
        ):
            # A pyroinst proxy's or daemon's handshake: say that annotated arrays are
            # understood (other messages, other daemons' handshakes: as Pyro5 makes them).
            annotations = {**(annotations or {}), FLAG: b"1"}
        # Annotations in order; small ones (and their headers) joined into the runs
        # between large ones, so a message is a few buffers, not two per annotation.
        parts: list[Any] = []
        run: list[Any] = []
        annotations_size = 0
        if annotations:
            for key, value in annotations.items():
                if len(key) != 4:
                    raise Pyro5.errors.ProtocolError(
                        "annotation identifier must be 4 ascii characters"
                    )
                kind = type(value)
                if kind is bytes:
                    size = len(value)
                elif kind is memoryview:
                    size = value.nbytes
                elif isinstance(value, bytes | bytearray | memoryview):
                    size = memoryview(value).nbytes
                else:
                    raise Pyro5.errors.ProtocolError(
                        "annotation data must be bytes, bytearray, or memoryview", type(value)
                    )
                if size > WIRE_MAX:
                    _too_large(size)
                run.append(_ANNOTATION_HEADER.pack(key.encode("ascii"), size))
                if size < _SEPARATE:
                    run.append(value)
                else:
                    parts.append(b"".join(run))
                    parts.append(value)
                    run = []
                annotations_size += 8 + size
        total = len(payload) + annotations_size
        if total > WIRE_MAX:
            _too_large(total)
        peer_max = getattr(_tls, "peer_max", None)
        if peer_max is not None and total > peer_max and msgtype == protocol.MSG_INVOKE:
            from .errors import MessageTooLarge

            raise MessageTooLarge(
                f"this call is a message of {total} bytes; {_label()} accepts at most "
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
            self.data = header + b"".join(parts) + b"".join(run) + payload
        else:
            if len(payload) < _SEPARATE:
                run.append(payload)
                payload = b""
            if parts:
                parts[0] = header + parts[0]  # (the run before the first large annotation)
                if run:
                    parts.append(b"".join(run))
            else:
                parts.append(header + b"".join(run))
            if payload:
                parts.append(payload)
            self.data = Gather(parts, _HEADER.size + total)


def _label() -> str:
    label = getattr(_tls, "peer_label", "")
    return label() if callable(label) else str(label)


def expect_peer_limit(limit: int | None, label: Any) -> None:
    """Client side: the server of the next call on this thread accepts ``limit`` bytes
    (``label``: its name in an error, or a function giving it)."""
    _tls.peer_max = limit
    _tls.peer_label = label


def _advance(views: list[memoryview], sent: int) -> None:
    """Drop the first ``sent`` bytes from ``views`` (what a sendmsg took)."""
    while sent:
        first = views[0]
        if sent >= first.nbytes:
            sent -= first.nbytes
            views.pop(0)
        else:
            views[0] = first[sent:]
            sent = 0


def _byte_views(data: Any) -> list[memoryview]:
    parts = data.parts if isinstance(data, Gather) else [data]
    return [v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes]


def send_data(sock: socket.socket, data: Any) -> None:
    """Send ``data`` (bytes-like or a Gather) completely; Pyro5's errors on failure."""
    if not isinstance(data, Gather) and (len(data) < INLINE_MAX or sock.gettimeout() is None):
        # Small, or no timeout: one sendall (it waits for room and retries interrupted
        # sends itself), with Pyro5's errors.
        try:
            if type(sock) is _Socket and sock.gettimeout():
                # With a timeout CPython polls before each send, though there is room for a
                # small message (most often): written at once, sendall only for what is left.
                try:
                    sent = _write(sock.fileno(), data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    sock.sendall(memoryview(data)[sent:])
            else:
                sock.sendall(data)
        except TimeoutError:
            raise Pyro5.errors.TimeoutError("sending: timeout") from None
        except OSError as exc:
            if _kernel_timeout(sock, exc):
                raise Pyro5.errors.TimeoutError("sending: timeout") from None
            raise Pyro5.errors.ConnectionClosedError(f"sending: connection lost: {exc}") from None
        return None
    is_ssl = hasattr(sock, "getpeercert")
    try:
        if is_ssl or not hasattr(sock, "sendmsg"):
            for view in _byte_views(data):
                _send_view(sock, view)
            return
        sent = 0
        if type(data) is Gather and len(data.parts) <= 512:
            # Most messages leave in this one call, their parts as they are.
            try:
                sent = sock.sendmsg(data.parts)
            except (TypeError, ValueError, BufferError):
                pass  # a part sendmsg does not take as it is (checked before sending)
            except OSError as exc:
                if exc.errno not in _RETRY:
                    raise
            if sent == data.nbytes:
                return
        views = _byte_views(data)
        _advance(views, sent)  # what the first call sent
        while views:
            try:
                sent = sock.sendmsg(views[:512])
            except OSError as exc:
                if exc.errno in _RETRY and not _kernel_timeout(sock, exc):
                    time.sleep(0.001)
                    continue
                raise
            _advance(views, sent)
    except TimeoutError:  # socket.timeout
        raise Pyro5.errors.TimeoutError("sending: timeout") from None
    except OSError as exc:
        if _kernel_timeout(sock, exc):
            raise Pyro5.errors.TimeoutError("sending: timeout") from None
        raise Pyro5.errors.ConnectionClosedError(f"sending: connection lost: {exc}") from None


def _kernel_timeout(sock: socket.socket, exc: OSError) -> bool:
    """True if ``exc`` is the kernel's timeout of a blocking socket (SO_SNDTIMEO, see
    ``set_timeout``): a blocking socket's send says EAGAIN for nothing else."""
    return type(exc) is BlockingIOError and sock.gettimeout() is None


def set_timeout(conn: Any, timeout: float | None) -> None:
    """Put ``timeout`` (seconds, None: none) on the connection ``conn`` for its sends and
    receives.

    On a plain TCP socket it is the kernel's (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking
    socket: CPython polls before every send and receive on a socket with a timeout of its
    own, one system call more for each. pyroinst's sends and receives take a blocking
    socket's EAGAIN for the timeout it is. Other sockets (TLS) get CPython's timeout.
    """
    sock = conn.sock
    had = conn.__dict__.get("_pyroinst_kernel_timeout")
    if timeout is None or type(sock) is not _Socket or not _KERNEL_TIMEOUTS:
        sock.settimeout(timeout)
        if had is not None:
            conn._pyroinst_kernel_timeout = None
            _set_kernel_timeouts(sock, 0.0)
        return
    sock.settimeout(None)
    if had != timeout:
        _set_kernel_timeouts(sock, timeout)
        conn._pyroinst_kernel_timeout = timeout


def timeout_of(conn: Any) -> float | None:
    """The timeout ``set_timeout`` put on ``conn`` (or the one its socket has now)."""
    timeout = conn.sock.gettimeout()
    if timeout is None:
        return conn.__dict__.get("_pyroinst_kernel_timeout")  # type: ignore[no-any-return]
    return timeout  # type: ignore[no-any-return]


def _set_kernel_timeouts(sock: socket.socket, timeout: float) -> None:
    seconds = int(timeout)
    micro = int((timeout - seconds) * 1e6)
    if timeout and not seconds and not micro:
        micro = 1  # (a zero timeval is no timeout at all)
    value = _TIMEVAL.pack(seconds, micro)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


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

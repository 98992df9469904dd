"""What the pieces of the fast message path share: sizes, annotation keys, thread state.

``sending`` builds and sends messages, ``receiving`` receives them, ``fastwire`` decides
which arrays travel as annotations and puts the pieces into Pyro5 (its docstring tells
the whole story).
"""

from __future__ import annotations

import errno
import struct
import threading
from typing import Any

from Pyro5 import protocol

__all__ = [
    "INLINE_MAX",
    "CONNECT_MAX",
    "FLAG",
    "WIRE_MAX",
    "ARRAY_PREFIX",
    "PAD_PREFIX",
    "ALIGN",
    "MAX_KEYS",
    "RETRY",
    "HEADER",
    "ANNOTATION_HEADER",
    "FIRST_KEY",
    "FIRST_PAD_KEY",
    "FIRST_PAD",
    "FIRST_HEAD",
    "local",
    "state",
    "too_large",
    "peer",
    "is_ours",
]

#: Arrays smaller than this travel inline in the serialized payload.
INLINE_MAX = 64 * 1024
#: The largest handshake (CONNECT message) a daemon reads.
CONNECT_MAX = 64 * 1024
#: Request annotation of a client that understands annotated arrays.
FLAG = "PIFW"
# Annotation keys are 4 ASCII characters; these prefixes stay clear of Pyro5's and users'.
ARRAY_PREFIX = "~"
PAD_PREFIX = "^"
ALIGN = 64
MAX_KEYS = 4096
RETRY = frozenset({errno.EINTR, errno.EAGAIN, errno.EWOULDBLOCK})
HEADER = struct.Struct(protocol._header_format)
#: The largest message (and annotation) Pyro5's header can describe: sizes are 32-bit.
WIRE_MAX = 2**32 - 1
ANNOTATION_HEADER = struct.Struct("!4sI")
# A message's first array: its annotation, after a pad that puts its data at offset ALIGN
# of the annotations (pad header, pad, array header). What annotations of one array
# begin with is FIRST_HEAD, then the array's length.
FIRST_KEY = f"{ARRAY_PREFIX}000"
FIRST_PAD_KEY = f"{PAD_PREFIX}000"
FIRST_PAD = bytes(ALIGN - 16)
FIRST_HEAD = ANNOTATION_HEADER.pack(FIRST_PAD_KEY.encode(), len(FIRST_PAD)) + FIRST_PAD
FIRST_HEAD += FIRST_KEY.encode()


class _Local(threading.local):
    """Per thread: what the call being made, received or decoded on it needs to know.

    The class attributes are every thread's defaults: reading one a thread never set
    finds it here (a missing attribute of a thread-local costs an exception, made and
    formatted, on every call).
    """

    proxy: Any = None  # the proxy whose call this thread makes (client side)
    annotated = False  # this thread's request carries array annotations
    peer_max: int | None = None  # the largest message the server of this call accepts
    peer_label: Any = ""  # its name in an error (or a function giving it)
    incoming: dict[str, Any] | None = None  # array annotations of the message being decoded
    received: Any = ()  # their keys, for checks
    connecting = False  # a proxy's connect (handshake) is in progress on this thread
    connect_serializer: int | None = None  # the serializer of that handshake
    handshaking = False  # a daemon answers a handshake on this thread
    answering: Any = None  # the connection whose plain call this thread runs (dispatch)
    replay: Any = None  # a received message handed to Pyro5's code (pyroinst.dispatch)
    # The array this thread annotated last (see fastwire.annotate_into): a weak reference to
    # its view, its key, its annotations' count then, arrays in them, their bytes.
    layout: tuple[Any, str, int, int, int] = (lambda: None, "", -1, 0, 0)


local = _Local()


class _State:
    """Whether the message path is in Pyro5, and whether the fast array path is used."""

    installed = False
    fast = False


state = _State()


def too_large(size: int) -> None:
    """MessageTooLarge for a message of ``size`` bytes (Pyro5's header holds 32-bit sizes)."""
    from .errors import MessageTooLarge

    raise MessageTooLarge(
        f"this message would be at least {size} bytes; a Pyro5 message holds less than "
        f"4 GiB ({WIRE_MAX + 1} bytes). Send smaller pieces.",
        size=size,
    )


def peer(connection: Any) -> str:
    """``host:port`` of the other end of a Pyro5 connection (or "?")."""
    try:
        host, port = connection.sock.getpeername()[:2]
        return f"{host}:{port}"
    except (AttributeError, OSError, TypeError):
        return "?"


def is_ours(key: str) -> bool:
    """True for the annotation keys of annotated arrays (and their padding)."""
    return key[:1] in (ARRAY_PREFIX, PAD_PREFIX)

"""What a peer may send before it proved anything: the checks of handshake messages.

Before a client proved the lab's token (and, on the client's side, before a server
answered its handshake), its bytes are a stranger's. pyroinst reads them only in forms
whose cost it can bound:

* the marshal serializer is never decoded (a crafted marshal message crashes CPython
  inside ``marshal.loads``, or makes it work for minutes on a few hundred bytes);
  pyroinst's daemons refuse it for every message, before and after the proof, and a
  pyroinst client accepts a handshake answer only in the serializer it sent its own in;
* a compressed handshake message is refused unread by a server; a client inflates a
  handshake answer to ``ANSWER_MAX`` at most; after the proof, inflation stops at
  ``max_message_size`` (``inflate``);
* a handshake message is at most ``PREPROOF_MAX`` bytes (``ANSWER_MAX`` for the answer a
  client reads), and its body is decoded by ``bounded_loads``: a plain decoder (no class
  hooks), at most a fixed number of containers and elements, no nesting deeper than
  ``MAX_DEPTH``, and no ``__class__``/``__pyroinst__`` markers. What passes is small
  plain data, which Pyro5's own decoder then reads again in microseconds.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import msgpack
import serpent
from Pyro5 import protocol

from .errors import MessageRefused

__all__ = [
    "SERPENT",
    "JSON",
    "MARSHAL",
    "MSGPACK",
    "NAMES",
    "PREPROOF_MAX",
    "BODY_MAX",
    "ANSWER_MAX",
    "MAX_DEPTH",
    "check_header",
    "bounded_loads",
    "inflate",
    "marshal_refusal",
]

# Pyro5's serializer ids (its serializers' ``serializer_id``; fixed by its protocol).
SERPENT, MARSHAL, JSON, MSGPACK = 1, 2, 3, 4
NAMES = {SERPENT: "serpent", JSON: "json", MARSHAL: "marshal", MSGPACK: "msgpack"}
#: The largest message (annotations and body) a peer may send before its proof.
PREPROOF_MAX = 16 * 1024
#: The largest handshake body a server decodes before the proof.
BODY_MAX = 4 * 1024
#: Elements (and containers) a server decodes in a handshake body.
BODY_ITEMS = 64
#: The largest handshake answer (CONNECTOK/CONNECTFAIL) a client reads; it lists the
#: device's members, so it may be larger than a request.
ANSWER_MAX = 1024 * 1024
#: Elements a client decodes in a handshake answer.
ANSWER_ITEMS = 16384
MAX_DEPTH = 16
_MARKERS = ("__class__", "__pyroinst__")
# Bytes that open a container or separate its elements in serpent and json text: their
# count bounds the elements the text can hold, so it is checked before parsing.
_STRUCTURAL = b"[{(,:"

MARSHAL_REFUSED = (
    "this server refuses the marshal serializer (it is unsafe to decode data from the "
    "network): use msgpack (pyroinst's default), serpent or json"
)


def check_header(
    msg: protocol.ReceivingMessage, accepted: tuple[int, ...], limit: int, what: str
) -> None:
    """Refuse (MessageRefused) a handshake message by its header alone: its type, its
    serializer, compression and size; nothing of its body has been read."""
    if msg.type not in accepted:
        raise MessageRefused(f"{what}: a message of type {msg.type} where the handshake was due")
    if msg.serializer_id == MARSHAL:
        raise MessageRefused(f"{what}: {MARSHAL_REFUSED}")
    if msg.serializer_id not in NAMES:
        raise MessageRefused(f"{what}: unknown serializer id {msg.serializer_id}")
    if msg.flags & protocol.FLAGS_COMPRESSED:
        raise MessageRefused(
            f"{what}: a compressed handshake (compression is refused before the proof)"
        )
    size = msg.data_size + msg.annotations_size
    if size > limit:
        raise MessageRefused(f"{what}: a handshake of {size} bytes (at most {limit} are read)")


def bounded_loads(serializer_id: int, data: Any, max_bytes: int, max_items: int) -> Any:
    """Decode a handshake body with a plain decoder, within the bounds (MessageRefused)."""
    data = bytes(data)
    name = NAMES.get(serializer_id, str(serializer_id))
    if len(data) > max_bytes:
        raise MessageRefused(f"a {name} handshake body of {len(data)} bytes (at most {max_bytes})")
    try:
        if serializer_id == MSGPACK:
            value = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=False,
                max_str_len=max_bytes,
                max_bin_len=max_bytes,
                max_array_len=max_items,
                max_map_len=max_items,
                max_ext_len=0,
            )
        elif serializer_id in (SERPENT, JSON):
            structural = sum(data.count(c) for c in _STRUCTURAL)
            if structural > max_items:
                raise MessageRefused(
                    f"a {name} handshake body with {structural} containers or elements "
                    f"(at most {max_items})"
                )
            if serializer_id == JSON:
                value = json.loads(data.decode("utf-8"))
            else:
                value = serpent.loads(data)
        else:
            raise MessageRefused(f"a handshake in serializer {name}, which is never decoded")
    except MessageRefused:
        raise
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, KeyError) as exc:
        raise MessageRefused(f"a {name} handshake body that does not decode: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - msgpack's own errors (ExtraData, StackError, ...)
        raise MessageRefused(f"a {name} handshake body that does not decode: {exc!r}") from None
    _check_plain(value, max_items)
    return value


def _check_plain(value: Any, max_items: int) -> None:
    """Refuse class markers and nesting deeper than MAX_DEPTH (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > 4 * max_items + 16:
            raise MessageRefused("a handshake body with too many elements")
        if isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise MessageRefused(f"a handshake body nested deeper than {MAX_DEPTH}")
            for key in _MARKERS:
                if key in item:
                    raise MessageRefused(f"a handshake body with a {key!r} marker")
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            if depth >= MAX_DEPTH:
                raise MessageRefused(f"a handshake body nested deeper than {MAX_DEPTH}")
            stack.extend((v, depth + 1) for v in item)


def inflate(data: Any, limit: int) -> bytes:
    """zlib-inflate ``data`` to at most ``limit`` bytes (MessageRefused beyond)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(bytes(data), limit + 1)
    except zlib.error as exc:
        raise MessageRefused(f"a compressed message that does not inflate: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise MessageRefused(
            f"a compressed message that inflates beyond {limit} bytes (max_message_size)"
        )
    return out


def marshal_refusal(msg: protocol.ReceivingMessage) -> bytes:
    """The answer to a marshal message on a pyroinst server's connection (an error reply,
    encoded with marshal.dumps, which is safe: only decoding marshal is not)."""
    import Pyro5.errors
    from Pyro5 import serializers

    serializer = serializers.serializers_by_id[MARSHAL]
    if msg.type == protocol.MSG_CONNECT:
        msgtype, flags, data = protocol.MSG_CONNECTFAIL, 0, serializer.dumps(MARSHAL_REFUSED)
    else:
        error = Pyro5.errors.SecurityError(MARSHAL_REFUSED)
        msgtype, flags, data = (
            protocol.MSG_RESULT,
            protocol.FLAGS_EXCEPTION,
            serializer.dumps(error),
        )
    return bytes(protocol.SendingMessage(msgtype, flags, msg.seq, MARSHAL, data).data)

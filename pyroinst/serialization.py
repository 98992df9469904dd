"""pyroinst's Pyro5 serializers: every value a call or a reply carries in its wire form.

Pyro5 only runs its class hooks on top-level values, and each serializer fails nested
numpy values differently (marshal writes them as raw bytes, serpent writes numpy 2
scalars as unparseable ``np.float64(1.5)``). So ``install()`` replaces Pyro5's serializer
instances with subclasses that walk every outgoing value once (``to_wire``, see
``pyroinst.wireform`` for the wire form) and turn the marked dicts back into objects
while decoding, at any depth. Large arrays go beside the payload (``pyroinst.fastwire``).
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any

import msgpack
import numpy as np
import Pyro5.serializers as pyro_serializers
from Pyro5 import config as pyro_config
from Pyro5.callcontext import current_context

from . import fastwire
from .buffers import ReadAnswer
from .errors import MessageTooLarge
from .receiving import incoming_array as _incoming_array
from .wire import INLINE_MAX
from .wireform import (  # the wire form's names, as pyroinst.serialization always had them
    _ATOMS,
    MARKER,
    _all_atoms,
    _array_dict,
    array_from_wire,
    array_to_wire,
    check_array,
    from_wire,
    sendable,
    to_wire,
)

__all__ = [
    "to_wire",
    "from_wire",
    "sendable",
    "array_to_wire",
    "array_from_wire",
    "install",
    "MARKER",
]

log = logging.getLogger(__name__)
_unpackb = msgpack.unpackb
_packb = msgpack.packb

#: Values every serializer carries as they are, in a message of a few bytes.
_SCALARS = frozenset({int, float, bool, type(None)})


def _fits(payload: bytes, annotations_size: int) -> bytes:
    """``payload``, if a response of it and ``annotations_size`` bytes of annotations fits
    in a message (else MessageTooLarge, and the response's array annotations dropped)."""
    size = len(payload) + annotations_size
    if size > pyro_config.MAX_MESSAGE_SIZE:
        # Pyro5 would drop the connection with no word to the client; say why instead.
        fastwire.clear_response_annotations()
        raise MessageTooLarge(
            f"the response is {size} bytes, more than the largest message allowed "
            f"({pyro_config.MAX_MESSAGE_SIZE} bytes, Pyro5's MAX_MESSAGE_SIZE): return "
            "smaller pieces, or raise the limit on both sides",
            size=size,
        )
    return payload


class _PyroinstMixin:
    """Encodes outgoing values with ``to_wire`` and decodes marked dicts at any depth.

    Large arrays go beside the payload as annotations (see fastwire) when the other
    side is pyroinst; otherwise inline, as raw bytes where the serializer allows.
    """

    _raw_buffers = False
    #: Dict key types this serializer carries as they are (others: the "dict" marker).
    _native_keys: frozenset[type] | None = frozenset({str})

    def _inline(self, a: np.ndarray) -> dict[str, Any]:
        return _array_dict(a, self._raw_buffers)  # (to_wire checked it)

    def _wire_array(self, a: np.ndarray, outgoing: str) -> Any:
        if a.nbytes >= INLINE_MAX and a.flags.c_contiguous:
            marker = fastwire.annotate(a, outgoing)
            if marker is not None:
                return marker
        return self._inline(a)

    def _response_array(self, a: np.ndarray) -> Any:
        return self._wire_array(a, "response")

    def _request_array(self, a: np.ndarray) -> Any:
        return self._wire_array(a, "request")

    def dumps(self, data: Any) -> bytes:
        fastwire.start_response()
        if type(data) in _SCALARS:
            # Most replies (None, a number): nothing to walk, no array, never too large.
            return super().dumps(data)  # type: ignore[misc,no-any-return]
        if isinstance(data, BaseException) and hasattr(data, "_pyroinst_traceback"):
            # A failed job's exception (a copy per fetch): send the job's own traceback,
            # not that of the job_result call Pyro5 put on it.
            data._pyroTraceback = data.__dict__.pop("_pyroinst_traceback")
        try:
            if type(data) is np.ndarray:
                wire = self._response_array(check_array(data))
            else:
                wire = to_wire(data, array=self._response_array, keys=self._native_keys)
        except RecursionError:
            # A structure that contains itself: Pyro5's own serializer gives its own
            # error (ValueError) for it, as without pyroinst.
            fastwire.clear_response_annotations()
            wire = data
        payload = super().dumps(wire)  # type: ignore[misc]
        return _fits(payload, fastwire.response_annotations_size())

    def dumpsCall(self, obj: str, method: str, vargs: Any, kwargs: dict) -> bytes:  # noqa: N802
        if kwargs or (vargs and not _all_atoms(vargs)):
            array = self._request_array
            try:
                # A list stays a list and a tuple a tuple: serpent keeps the difference.
                keys = self._native_keys
                vargs = to_wire(vargs, array=array, keys=keys)
                if kwargs:
                    kwargs = to_wire(kwargs, array=array, keys=keys)
            except RecursionError:
                # A structure that contains itself: Pyro5's serializer raises its own
                # ValueError for it (annotations set meanwhile go when the call ends).
                pass
        return super().dumpsCall(obj, method, vargs, kwargs)  # type: ignore[misc]

    def loadsCall(self, data: Any) -> Any:  # noqa: N802
        try:
            return super().loadsCall(data)  # type: ignore[misc]
        finally:
            fastwire.forget_incoming()  # the arrays made own the buffer

    def recreate_classes(self, literal: Any) -> Any:
        # serpent, marshal and json decode through this top-down walk.
        if type(literal) is dict and MARKER in literal:
            return from_wire(literal, self.recreate_classes)
        return super().recreate_classes(literal)  # type: ignore[misc]


class SerpentSerializer(_PyroinstMixin, pyro_serializers.SerpentSerializer):
    """Pyro5's serpent serializer, numpy- and JobHandle-aware."""

    # serpent refuses None keys, and bytes become a dict, which cannot be a key.
    _native_keys = frozenset({str, int, float, bool, tuple})


class MarshalSerializer(_PyroinstMixin, pyro_serializers.MarshalSerializer):
    """Pyro5's marshal serializer, numpy- and JobHandle-aware."""

    _raw_buffers = True
    _native_keys = frozenset({str, int, float, bool, type(None), bytes, tuple})


class JsonSerializer(_PyroinstMixin, pyro_serializers.JsonSerializer):
    """Pyro5's json serializer, numpy- and JobHandle-aware; bytes travel as base64."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, bytes | bytearray | memoryview):
            return {"data": base64.b64encode(obj).decode("ascii"), "encoding": "base64"}
        if isinstance(obj, complex):
            return {MARKER: "complex", "real": obj.real, "imag": obj.imag}
        return super().default(obj)


class MsgpackSerializer(_PyroinstMixin, pyro_serializers.MsgpackSerializer):
    """Pyro5's msgpack serializer, numpy- and JobHandle-aware; bytes stay raw binary."""

    _raw_buffers = True
    # Pyro5 decodes msgpack with strict_map_key: only str and bytes keys.
    _native_keys = frozenset({str, bytes})

    def _convertToBytes(self, data: Any) -> Any:  # noqa: N802
        # msgpack reads any buffer; converting a received bytearray would copy it.
        return data

    def object_hook(self, obj: dict) -> Any:
        # msgpack decodes bottom-up through this hook instead of recreate_classes (every
        # dict of a message passes here: kept short).
        if MARKER in obj:
            if obj[MARKER] == "ndarray":
                # (from_wire's first case, the most common)
                if "ann" in obj:  # beside the payload
                    return _incoming_array(obj["ann"], obj["dtype"], obj["shape"])
                return array_from_wire(obj)
            return from_wire(obj)
        if "__class__" in obj:
            return self.dict_to_class(obj)  # Pyro5's object_hook
        return obj

    def loadsCall(self, data: Any) -> Any:  # noqa: N802
        # Pyro5's, and the mixin's cleanup, in one call.
        try:
            return _unpackb(data, raw=False, object_hook=self.object_hook, ext_hook=self.ext_hook)
        finally:
            fastwire.forget_incoming()  # the arrays made own the buffer

    def loads(self, data: Any) -> Any:
        return _unpackb(data, raw=False, object_hook=self.object_hook, ext_hook=self.ext_hook)

    def dumps(self, data: Any) -> bytes:
        kind = type(data)
        if kind in _SCALARS and not current_context.response_annotations:
            # Most replies (None, a number), as the mixin's dumps makes them: no array, no
            # walk, nothing left of an earlier response to clear.
            return _packb(data, use_bin_type=True, default=self.default)  # type: ignore[no-any-return]
        if kind is np.ndarray:
            # An array alone (a trace, an image), as the mixin sends it: a small one inline,
            # a large one beside the payload (its marker here).
            if data.nbytes < INLINE_MAX:
                if not current_context.response_annotations:
                    payload = _packb(_array_dict(check_array(data), True), use_bin_type=True)
                    return _fits(payload, 0)
            else:
                marker = fastwire.annotate_response(check_array(data))
                if marker is not None:
                    payload = _packb(marker, use_bin_type=True)
                    return _fits(payload, fastwire.FIRST_ARRAY_EXTRA + data.nbytes)
        if kind is ReadAnswer:
            return self._read_answer(data)
        return super().dumps(data)

    def _read_answer(self, answer: ReadAnswer) -> bytes:
        """A stream's batch (``ReadAnswer``) as the mixin's ``dumps`` makes it, on a short
        path: its values besides ``items`` are numbers, booleans and strings, and its
        large arrays go straight beside the payload."""
        fastwire.start_response()
        target = fastwire.response_target()
        items = []
        try:
            for item in answer["items"]:
                kind = type(item)
                if kind in _ATOMS:
                    items.append(item)
                    continue
                if (
                    kind is np.ndarray
                    and target is not None
                    and item.nbytes >= INLINE_MAX
                    and item.flags.c_contiguous
                    and item.dtype.fields is None
                    and not item.dtype.hasobject
                ):
                    marker = fastwire.annotate_into(target, item)
                    if marker is not None:
                        items.append(marker)
                        continue
                items.append(to_wire(item, array=self._response_array, keys=self._native_keys))
        except RecursionError:
            return super().dumps(dict(answer))  # (Pyro5's own error, as for any value)
        wire = dict(answer)
        wire["items"] = items
        payload = _packb(wire, use_bin_type=True, default=self.default)
        return _fits(payload, fastwire.response_annotations_size())


_installed = False


def install() -> None:
    """Put the pyroinst serializers in Pyro5's tables and choose msgpack as the default.

    Idempotent. The default serializer becomes msgpack unless the environment variable
    ``PYRO_SERIALIZER`` chose one; Pyro5 reads it on every call, so existing proxies
    switch as well.
    """
    global _installed
    if _installed:
        return
    for klass in (SerpentSerializer, MarshalSerializer, JsonSerializer, MsgpackSerializer):
        instance = klass()
        for name, existing in list(pyro_serializers.serializers.items()):
            if existing.serializer_id == klass.serializer_id:
                pyro_serializers.serializers[name] = instance
        pyro_serializers.serializers_by_id[klass.serializer_id] = instance
    if "PYRO_SERIALIZER" not in os.environ:
        pyro_config.SERIALIZER = "msgpack"
    fastwire.install()
    _installed = True
    log.debug("pyroinst serializers installed; default serializer %s", pyro_config.SERIALIZER)

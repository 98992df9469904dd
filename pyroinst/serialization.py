"""numpy arrays, numpy scalars and JobHandles through every Pyro5 serializer.

On the wire an array is the plain dict
``{"__pyroinst__": "ndarray", "dtype": a.dtype.str, "shape": [...], "data": <bytes>}`` and
a job handle ``{"__pyroinst__": "JobHandle", "id": ..., "device": ..., "uri": ...}``. They
are plain dicts on purpose: a client without pyroinst receives them as dicts and decodes
an array with ``np.frombuffer``. numpy scalars travel as Python numbers.

Pyro5 only runs its class hooks on top-level values, and each serializer fails nested
numpy values differently (marshal writes them as raw bytes, serpent writes numpy 2
scalars as unparseable ``np.float64(1.5)``). So ``install()`` replaces Pyro5's serializer
instances with subclasses that walk every outgoing value once (``to_wire``) and turn the
marked dicts back into objects while decoding, at any depth.

``bytes`` under json (which has none) travel as serpent's ``{"data": <base64>,
"encoding": "base64"}``, as they do under serpent itself; ``serpent.tobytes`` reads all forms.
Complex numbers under json travel as ``{"__pyroinst__": "complex", "real": .., "imag": ..}``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import logging
import os
import uuid
from typing import Any

import numpy as np
import Pyro5.core
import Pyro5.serializers as pyro_serializers
import serpent
from Pyro5 import config as pyro_config

from .client import JobHandle
from .errors import NotSerializableError

__all__ = ["to_wire", "from_wire", "array_to_wire", "array_from_wire", "install", "MARKER"]

log = logging.getLogger(__name__)

MARKER = "__pyroinst__"

_ATOMS = frozenset({str, int, float, bool, type(None), bytes, bytearray, complex})
# Values the Pyro5 serializers handle by themselves and that pyroinst lets through.
_PASSED = (
    BaseException,
    datetime.datetime,
    datetime.date,
    decimal.Decimal,
    uuid.UUID,
    Pyro5.core.URI,
)


def array_to_wire(a: np.ndarray) -> dict[str, Any]:
    """An array as its wire dict: dtype string, shape and the raw C-order bytes."""
    if a.dtype.hasobject or a.dtype.fields is not None:
        raise NotSerializableError(
            f"cannot send a numpy array of dtype {a.dtype}: object and structured arrays are "
            "not supported; send numeric, bool, complex or string arrays (or a dict of arrays)"
        )
    if not a.flags.c_contiguous:
        a = a.copy(order="C")
    return {MARKER: "ndarray", "dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def array_from_wire(d: dict[str, Any]) -> np.ndarray:
    """Rebuild an array from its wire dict (a writeable array that owns its memory)."""
    dtype = np.dtype(d["dtype"])
    if dtype.hasobject:
        raise NotSerializableError("refusing to decode an array of object dtype")
    data = serpent.tobytes(d["data"])
    shape = tuple(int(n) for n in d["shape"])
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


def to_wire(obj: Any, strict: bool = False) -> Any:
    """``obj`` with every array, numpy scalar and JobHandle replaced by its wire form.

    Containers are rebuilt as plain dicts, lists, tuples and sets. Other values pass
    unchanged for Pyro5's serializers to handle; with ``strict`` a value none of them
    can send faithfully raises NotSerializableError instead.
    """
    t = type(obj)
    if t in _ATOMS:
        return obj
    if t is dict:
        return {to_wire(k, strict): to_wire(v, strict) for k, v in obj.items()}
    if t is list:
        return [to_wire(v, strict) for v in obj]
    if t is tuple:
        return tuple(to_wire(v, strict) for v in obj)
    if isinstance(obj, np.ndarray):
        return array_to_wire(obj)
    if isinstance(obj, np.generic):
        return to_wire(obj.item(), strict)
    if isinstance(obj, JobHandle):
        return obj.to_wire()
    # Subclasses (IntEnum, OrderedDict, namedtuple...) as their plain base types.
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, dict):
        return {to_wire(k, strict): to_wire(v, strict) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_wire(v, strict) for v in obj]
    if isinstance(obj, set | frozenset):
        return {to_wire(v, strict) for v in obj}
    if strict and not isinstance(obj, _PASSED):
        raise NotSerializableError(
            f"a value of type {t.__module__}.{t.__qualname__} cannot be sent: send built-in "
            "types (numbers, str, bytes, lists, tuples, dicts), numpy arrays, or convert it "
            "(e.g. dataclasses.asdict(value))",
            value_type=f"{t.__module__}.{t.__qualname__}",
        )
    return obj


def from_wire(d: dict[str, Any]) -> Any:
    """Turn one marked wire dict back into its object (unknown markers stay dicts)."""
    kind = d.get(MARKER)
    if kind == "ndarray":
        return array_from_wire(d)
    if kind == "JobHandle":
        return JobHandle(d["id"], d["device"], d["uri"])
    if kind == "complex":
        return complex(d["real"], d["imag"])
    return d


class _PyroinstMixin:
    """Encodes outgoing values with ``to_wire`` and decodes marked dicts at any depth."""

    def dumps(self, data: Any) -> bytes:
        return super().dumps(to_wire(data))  # type: ignore[misc]

    def dumpsCall(self, obj: str, method: str, vargs: Any, kwargs: dict) -> bytes:  # noqa: N802
        return super().dumpsCall(obj, method, to_wire(tuple(vargs)), to_wire(kwargs))  # type: ignore[misc]

    def recreate_classes(self, literal: Any) -> Any:
        # serpent, marshal and json decode through this top-down walk.
        if type(literal) is dict and MARKER in literal:
            return from_wire(literal)
        return super().recreate_classes(literal)  # type: ignore[misc]


class SerpentSerializer(_PyroinstMixin, pyro_serializers.SerpentSerializer):
    """Pyro5's serpent serializer, numpy- and JobHandle-aware."""


class MarshalSerializer(_PyroinstMixin, pyro_serializers.MarshalSerializer):
    """Pyro5's marshal serializer, numpy- and JobHandle-aware."""


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

    def object_hook(self, obj: dict) -> Any:
        # msgpack decodes bottom-up through this hook instead of recreate_classes.
        if MARKER in obj:
            return from_wire(obj)
        return super().object_hook(obj)


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
    _installed = True
    log.debug("pyroinst serializers installed; default serializer %s", pyro_config.SERIALIZER)

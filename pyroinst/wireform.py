"""The wire form of values: numpy arrays, numpy scalars, JobHandles as plain data.

On the wire an array is the plain dict
``{"__pyroinst__": "ndarray", "dtype": a.dtype.str, "shape": [...], "data": <bytes>}`` and
a job handle ``{"__pyroinst__": "JobHandle", "id": ..., "device": ..., "uri": ...}``. They
are plain dicts on purpose: a client without pyroinst receives them as dicts and decodes
an array with ``np.frombuffer``. numpy scalars travel as Python numbers.

``to_wire`` makes a value's wire form (every array, numpy scalar and handle replaced, at
any depth), ``from_wire`` turns a marked dict back into its object; the serializers of
``pyroinst.serialization`` use them on everything a call or a reply carries.

``bytes`` under json (which has none) travel as serpent's ``{"data": <base64>,
"encoding": "base64"}``, as they do under serpent itself; ``serpent.tobytes`` reads all forms.
Complex numbers under json travel as ``{"__pyroinst__": "complex", "real": .., "imag": ..}``.

A dict with a ``"__class__"`` key (a QCoDeS snapshot, say) is data, not one of Pyro5's
class dicts: it travels as a ``"dict"`` marker (below), so the receiver gets the dict
instead of Pyro5's "unsupported serialized class". An exception's arguments and
attributes go through the same conversion (a driver's ``ValueError("too high",
np.float32(12.5))`` arrives with ``12.5``).

Dict keys: int, float, bool, None, str, bytes and tuple keys (of those) round-trip under
every serializer, at any depth. A dict whose keys the serializer cannot carry as they are
(json: anything but str; msgpack: anything but str and bytes, as Pyro5 decodes msgpack with
``strict_map_key``; serpent: None, bytes, or tuples holding them) travels as
``{"__pyroinst__": "dict", "items": [[key, value], ...]}``; tuple keys come back as tuples.

``datetime64`` and ``timedelta64`` arrays travel as their int64 bytes with their own dtype
string (unit included); their numpy scalars as ``{"__pyroinst__": "npscalar", "dtype": ..,
"value": <int64>}``, so they keep their unit.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import Pyro5.core
import serpent

from . import fastwire
from .errors import NotSerializableError
from .handles import HANDLE_KIND, JobHandle
from .receiving import known_dtype as _known_dtype

__all__ = [
    "to_wire",
    "from_wire",
    "sendable",
    "array_to_wire",
    "array_from_wire",
    "check_array",
    "MARKER",
]

_frombuffer = np.frombuffer

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


def array_to_wire(a: np.ndarray, raw: bool = False) -> dict[str, Any]:
    """An array as its wire dict: dtype string, shape and the raw C-order bytes.

    With ``raw`` the data is a memoryview of the array (no copy) for serializers that
    write buffers as binary (msgpack, marshal).
    """
    return _array_dict(check_array(a), raw)


#: Below this many bytes an array's data is copied rather than viewed: a copy of a few KiB
#: costs less than making the view (and msgpack copies either into its message anyway).
VIEW_MIN = 4096

#: dtype -> its wire string (numpy makes the string anew on every ``dtype.str``); at most
#: DTYPE_NAMES_MAX of them are kept (string dtypes come in every length).
_dtype_names: dict[np.dtype, str] = {}
DTYPE_NAMES_MAX = 256


def _dtype_name(dtype: np.dtype) -> str:
    name = _dtype_names.get(dtype)
    if name is None:
        name = dtype.str
        if len(_dtype_names) < DTYPE_NAMES_MAX:
            _dtype_names[dtype] = name
    return name


def _array_dict(a: np.ndarray, raw: bool) -> dict[str, Any]:
    """``array_to_wire`` for an array already checked."""
    if not a.flags.c_contiguous:
        a = a.copy(order="C")
    data = fastwire.byte_view(a) if raw and a.nbytes >= VIEW_MIN else a.tobytes()
    return {MARKER: "ndarray", "dtype": _dtype_name(a.dtype), "shape": list(a.shape), "data": data}


def array_from_wire(d: dict[str, Any]) -> np.ndarray:
    """Rebuild an array from its wire dict (a writeable array that owns its memory)."""
    dtype = _known_dtype(d["dtype"])
    data = d["data"]
    if type(data) is not bytes:
        data = serpent.tobytes(data)  # serpent's and json's forms of bytes
    a = _frombuffer(bytearray(data), dtype)  # (positional: numpy parses keywords slowly)
    shape = d["shape"]
    if type(shape) is not list or len(shape) != 1 or shape[0] != a.size:
        a = a.reshape(tuple(map(int, shape)))
    return a


def check_array(a: np.ndarray) -> np.ndarray:
    """``a`` itself if it can be sent (NotSerializableError for object/structured dtypes)."""
    if a.dtype.hasobject or a.dtype.fields is not None:
        raise NotSerializableError(
            f"cannot send a numpy array of dtype {a.dtype}: object and structured arrays are "
            "not supported; send numeric, bool, complex or string arrays (or a dict of arrays)"
        )
    return a


def _native_key(key: Any, keys: frozenset[type]) -> bool:
    t = type(key)
    if t is tuple:
        return tuple in keys and all(_native_key(k, keys) for k in key)
    return t in keys


def _dict_to_wire(
    obj: dict, strict: bool, array: Callable[[np.ndarray], Any], keys: frozenset[type] | None
) -> dict:
    native = "__class__" not in obj  # Pyro5 would take the dict for a class: escape it
    if native and keys is not None:
        for k in obj:
            tk = type(k)
            if tk not in keys or (tk is tuple and not _native_key(k, keys)):
                native = False
                break
    if native:
        # Atoms (the common case: str keys, numbers) without a call each.
        return {
            (k if type(k) in _ATOMS else to_wire(k, strict, array, keys)): (
                v if type(v) in _ATOMS else to_wire(v, strict, array, keys)
            )
            for k, v in obj.items()
        }
    # Keys the serializer cannot carry as they are: a list of pairs (see the module doc).
    return {
        MARKER: "dict",
        "items": [
            [to_wire(k, strict, array, keys), to_wire(v, strict, array, keys)]
            for k, v in obj.items()
        ],
    }


def to_wire(
    obj: Any,
    strict: bool = False,
    array: Callable[[np.ndarray], Any] | None = None,
    keys: frozenset[type] | None = None,
) -> Any:
    """``obj`` with every array, numpy scalar and JobHandle replaced by its wire form.

    Containers are rebuilt as plain dicts, lists, tuples and sets. Other values pass
    unchanged for Pyro5's serializers to handle; with ``strict`` a value none of them
    can send faithfully raises NotSerializableError instead. ``array`` turns an array
    into its wire form (default: the inline dict of ``array_to_wire``). ``keys``: the key
    types the serializer carries as they are (None: any); a dict with other keys becomes
    a ``"dict"`` marker.
    """
    t = type(obj)
    if t in _ATOMS:
        return obj
    if array is None:
        array = array_to_wire
    if t is dict:
        return _dict_to_wire(obj, strict, array, keys)
    if t is list:
        return [v if type(v) in _ATOMS else to_wire(v, strict, array, keys) for v in obj]
    if t is tuple:
        return tuple([v if type(v) in _ATOMS else to_wire(v, strict, array, keys) for v in obj])
    if t is np.ndarray or isinstance(obj, np.ndarray):
        return array(check_array(obj))
    if isinstance(obj, np.datetime64 | np.timedelta64):
        # .item() would turn nanoseconds into a bare int: keep the dtype (and its unit).
        return {MARKER: "npscalar", "dtype": obj.dtype.str, "value": int(obj.view(np.int64))}
    if isinstance(obj, np.generic):
        return to_wire(obj.item(), strict, array, keys)
    if isinstance(obj, JobHandle):
        return obj.to_wire()
    if isinstance(obj, BaseException):
        return _exception_to_wire(obj, strict, array, keys)
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
        return _dict_to_wire(dict(obj), strict, array, keys)
    if isinstance(obj, list | tuple):
        return [to_wire(v, strict, array, keys) for v in obj]
    if isinstance(obj, set | frozenset):
        return {to_wire(v, strict, array, keys) for v in obj}
    if strict and not isinstance(obj, _PASSED):
        raise NotSerializableError(
            f"a value of type {t.__module__}.{t.__qualname__} cannot be sent: send built-in "
            "types (numbers, str, bytes, lists, tuples, dicts), numpy arrays, or convert it "
            "(e.g. dataclasses.asdict(value))",
            value_type=f"{t.__module__}.{t.__qualname__}",
        )
    return obj


def _exception_to_wire(
    exc: BaseException,
    strict: bool,
    array: Callable[[np.ndarray], Any],
    keys: frozenset[type] | None,
) -> BaseException:
    """``exc`` itself, or a copy whose arguments and attributes are wire values (Pyro5
    sends an exception's args and vars as they are: numpy values would break it)."""
    state = vars(exc)
    # Only numpy values are converted: anything else stays Pyro5's to handle (or refuse).
    if not any(isinstance(a, np.generic | np.ndarray) for a in exc.args) and not any(
        isinstance(v, np.generic | np.ndarray) for v in state.values()
    ):
        return exc
    try:
        converted = copy.copy(exc)
    except Exception:  # noqa: BLE001 - an exception class that cannot be copied: as it is
        return exc
    converted.args = tuple(to_wire(a, strict, array, keys) for a in exc.args)
    for key, value in state.items():
        if not key.startswith("_pyro") and type(value) not in _ATOMS:
            setattr(converted, key, to_wire(value, strict, array, keys))
    return converted


def _key_from_wire(key: Any) -> Any:
    """A dict key as sent back to a hashable key: lists (msgpack, json) become tuples,
    serpent's base64 dicts (serpent, json) bytes."""
    t = type(key)
    if t is list or t is tuple:
        return tuple(_key_from_wire(k) for k in key)
    if t is dict and key.get("encoding") == "base64" and "data" in key:
        return serpent.tobytes(key)
    return key


def _keep(a: np.ndarray) -> np.ndarray:
    return a


def sendable(value: Any, what: str | Callable[[], str]) -> Any:
    """``value`` checked and prepared for sending (arrays kept as they are, not copied;
    containers copied, so a driver may go on changing its own).

    NotSerializableError, starting with ``what``, if no serializer can send it faithfully.
    """
    t = type(value)
    if t in _ATOMS:
        return value
    if t is dict and _all_atoms(value.values()) and _all_atoms(value):
        return dict(value)  # a dict of plain values (a point): a copy is all it needs
    try:
        if t is np.ndarray:
            return check_array(value)  # as it is: the serializer decides how it travels
        return to_wire(value, strict=True, array=_keep)
    except NotSerializableError as exc:
        said = what() if callable(what) else what
        raise NotSerializableError(f"{said} something that cannot be sent: {exc}") from None


def from_wire(d: dict[str, Any], recurse: Callable[[Any], Any] | None = None) -> Any:
    """Turn one marked wire dict back into its object (unknown markers stay dicts).

    ``recurse`` decodes the contents of a container marker (``"dict"``) for serializers
    that decode top-down; msgpack decodes bottom-up and has done it already.
    """
    kind = d.get(MARKER)
    if kind == "ndarray":
        if "ann" in d:
            # The bytes came beside the payload, as a message annotation (fastwire).
            return fastwire.incoming_array(d["ann"], d["dtype"], d["shape"])
        return array_from_wire(d)
    if kind == HANDLE_KIND:
        proxy = fastwire.calling_proxy()
        return JobHandle(
            d["id"],
            d["device"],
            d["uri"],
            getattr(proxy, "_pyroinst_ns", None),
            getattr(proxy, "_pyroinst_owner", None),
            getattr(proxy, "_pyroinst_lease", None),
        )
    if kind == "dict":
        items = d["items"] if recurse is None else recurse(d["items"])
        return {_key_from_wire(k): v for k, v in items}
    if kind == "npscalar":
        dtype = np.dtype(d["dtype"])
        if dtype.kind not in "mM":
            raise NotSerializableError(f"npscalar of dtype {dtype} is not a time value")
        return np.array(int(d["value"]), dtype=np.int64).view(dtype)[()]
    if kind == "error":
        from .errors import MonitorError

        return MonitorError(
            f"{d['type']}: {d['message']}", error_type=d["type"], error_message=d["message"]
        )
    if kind == "complex":
        return complex(d["real"], d["imag"])
    return d


def _all_atoms(values: Any) -> bool:
    """True if every one of ``values`` is an atom (sent as it is)."""
    for value in values:
        if type(value) not in _ATOMS:
            return False
    return True

"""Device values for HTTP: JSON, summaries for events, ``.npy`` and CSV downloads."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..handles import JobHandle
from ..summaries import array_summary

__all__ = ["to_json", "summary", "npy_chunks", "npy_length", "to_csv", "as_array"]

#: Bytes per piece of a streamed ``.npy`` body.
CHUNK = 4 << 20
#: Arrays up to this many elements travel inline in an event (a scalar series, a short line).
INLINE_EVENT = 16
#: 1-D numeric arrays up to this many points carry their data in an event too: the page
#: adds them to a growing trace without fetching each one.
INLINE_LINE = 256


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else repr(value)  # JSON has no nan/inf


def _clean(value: Any) -> Any:
    """Nested lists from ``ndarray.tolist()`` made JSON-safe (non-finite floats as text)."""
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, complex):
        return [_number(value.real), _number(value.imag)]
    if isinstance(value, (_dt.datetime, _dt.date, _dt.timedelta)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def to_json(value: Any) -> Any:
    """``value`` as JSON-ready data: arrays as ``{dtype, shape, data}`` (nested lists),
    numpy scalars as numbers, bytes as hex, complex as ``[re, im]``, job handles as
    ``{job, device}``, non-finite floats as ``"nan"``/``"inf"``."""
    if isinstance(value, np.ndarray):
        return {
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            "data": _clean(value.tolist()),
        }
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, JobHandle):
        return {"job": value.id, "device": value.device}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (complex, bytes, bytearray, _dt.datetime, _dt.date, _dt.timedelta)):
        return _clean(bytes(value) if isinstance(value, bytearray) else value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)


def summary(value: Any) -> Any:
    """What an event says of a value: small values as they are, arrays as ``{dtype, shape,
    min, max, mean}`` (numeric ones; with ``data`` when they are tiny)."""
    if isinstance(value, np.ndarray):
        out = array_summary(value, finite_only=True)
        for key in ("min", "max", "mean"):
            if key in out:
                out[key] = _number(out[key])
        inline_line = value.ndim == 1 and value.dtype.kind in "biuf" and value.size <= INLINE_LINE
        if value.size <= INLINE_EVENT or inline_line:
            out["data"] = _clean(value.tolist())
        return out
    if isinstance(value, (list, tuple)):
        if len(value) > INLINE_EVENT:
            return {"type": type(value).__name__, "length": len(value)}
        return [summary(v) for v in value]
    if isinstance(value, dict):
        # Arrays anywhere inside an item are summarised too (the item route has it whole).
        return {str(k): summary(v) for k, v in value.items()}
    return to_json(value)


def as_array(value: Any) -> np.ndarray | None:
    """``value`` as a numeric array if it is one (or a list of numbers), else None."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) and value:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            return None
        if array.dtype.kind in "biufc":
            return array
    return None


def _header(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, np.lib.format.header_data_from_array_1_0(array))
    return buffer.getvalue()


def _contiguous(array: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    return array if array.flags.c_contiguous else np.array(array, order="C")


def npy_length(array: np.ndarray) -> int:
    """The size of ``array``'s ``.npy`` file in bytes."""
    return len(_header(_contiguous(array))) + array.nbytes


def npy_chunks(array: np.ndarray) -> Iterator[bytes | memoryview]:
    """``array`` as a ``.npy`` file, in pieces straight from its memory (no copy)."""
    if array.dtype.hasobject:
        raise TypeError("an array of Python objects has no .npy form here")
    array = _contiguous(array)
    yield _header(array)
    flat = memoryview(array.reshape(-1).view(np.uint8))
    for start in range(0, len(flat), CHUNK):
        yield flat[start : start + CHUNK]


def to_csv(array: np.ndarray) -> str:
    """A 1-D or 2-D array as CSV text (one row per line; complex as ``re+imj``)."""
    if array.ndim > 2:
        raise ValueError(f"CSV holds 1-D or 2-D arrays; this one has shape {list(array.shape)}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rows = array.reshape(-1, 1) if array.ndim <= 1 else array
    for row in np.atleast_2d(rows):
        writer.writerow([repr(v) if isinstance(v, float) else v for v in row.tolist()])
    return out.getvalue()

"""Short descriptions of arrays: dtype, shape and statistics (for the CLI, events, logs)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["array_summary"]


def array_summary(a: np.ndarray, finite_only: bool = False) -> dict[str, Any]:
    """``{dtype, shape}`` plus ``min``, ``max``, ``mean`` of a numeric (or bool) array's
    values (real parts of complex ones); ``finite_only`` leaves NaN and infinities out
    of the statistics (none at all if nothing finite is left)."""
    summary: dict[str, Any] = {"dtype": str(a.dtype), "shape": list(a.shape)}
    if a.size and (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        real = a.real if np.iscomplexobj(a) else a
        if finite_only and real.dtype.kind == "f":
            real = real[np.isfinite(real)]
        if real.size:
            summary.update(
                min=float(np.min(real)), max=float(np.max(real)), mean=float(np.mean(real))
            )
    return summary

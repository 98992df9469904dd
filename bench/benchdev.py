"""The device every benchmark row talks to (pyroinst and raw Pyro5 alike)."""

from __future__ import annotations

import time

import numpy as np

# No pyroinst import here: the raw-Pyro5 server uses this class too. The pyroinst server
# marks sleep_job and noop_job as jobs with add_device(..., jobs=JOBS).
JOBS = {"sleep_job", "noop_job"}


def make_array(n: int) -> np.ndarray:
    """The deterministic float64 array of ``n`` points both sides can rebuild."""
    return np.random.default_rng(n).random(n)


class BenchDevice:
    """Trivial calls, arrays of a given size both ways, sleeping jobs."""

    def __init__(self) -> None:
        self._arrays: dict[int, np.ndarray] = {}
        self._uploaded: np.ndarray | None = None

    def noop(self) -> None:
        """Do nothing (latency)."""

    def array(self, n: int) -> np.ndarray:
        """The float64 array of ``n`` points (made once, then cached)."""
        a = self._arrays.get(n)
        if a is None:
            a = self._arrays[n] = make_array(n)
        return a

    def upload(self, a: np.ndarray) -> int:
        """Receive an array; returns its size in bytes."""
        self._uploaded = a
        return int(a.nbytes)

    def verify_upload(self, n: int) -> bool:
        """True if the last upload equals make_array(n) (checked outside the timing)."""
        ok = self._uploaded is not None and np.array_equal(self._uploaded, self.array(n))
        self._uploaded = None
        return bool(ok)

    def forget(self) -> None:
        """Drop cached arrays."""
        self._arrays.clear()
        self._uploaded = None

    def sleep_job(self, seconds: float) -> float:
        """A job that sleeps ``seconds``."""
        time.sleep(seconds)
        return seconds

    def noop_job(self) -> None:
        """A job that does nothing (job overhead)."""

"""A dummy instrument for demos and tests, the descendant of the 2017 server's DummyDevice."""

from __future__ import annotations

import itertools
import os
import time as _time

import numpy as np

from pyroinst import current_job, job

_serials = itertools.count(1)


class DummyDevice:
    """A stand-in instrument: identifies itself slowly and measures random data.

    Every instance has its own serial number. ``idn()`` takes ``idn_delay`` seconds, like
    a slow instrument; ``measure(time)`` is a job of ``time`` milliseconds.
    """

    def __init__(self, idn_delay: float = 2.0, seed: int | None = None) -> None:
        self.idn_delay = float(idn_delay)
        self.serial = f"DMY{os.getpid() % 100000:05d}-{next(_serials):04d}"
        self._rng = np.random.default_rng(seed)
        self.initialized = False

    def initialize(self) -> bool:
        """Prepare the instrument; returns True."""
        self.initialized = True
        return True

    def idn(self) -> str:
        """The identification string (manufacturer, model, serial, firmware); takes idn_delay s."""
        _time.sleep(self.idn_delay)
        return f"pyroinst,DummyDevice,{self.serial},1.0"

    @job
    def measure(self, time: int) -> np.ndarray:
        """Measure for ``time`` milliseconds; returns ``time`` random float64 points.

        Reports progress as it goes and stops within 100 ms when cancelled.
        """
        points = int(time)
        if points < 0:
            raise ValueError(f"measure time must be >= 0 ms, got {time}")
        ctx = current_job()
        duration = points / 1000.0
        start = _time.monotonic()
        step = 0.02
        while True:
            elapsed = _time.monotonic() - start
            if elapsed >= duration:
                break
            ctx.set_progress(
                elapsed / duration if duration else 1.0, f"{int(elapsed * 1000)} of {points} ms"
            )
            ctx.sleep(min(step, duration - elapsed))
        ctx.set_progress(1.0, f"{points} of {points} ms")
        return self._rng.random(points)

    def close(self) -> None:
        """Release the instrument (nothing to release for a dummy)."""
        self.initialized = False

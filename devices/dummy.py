"""A dummy instrument for demos and tests, the descendant of the 2017 server's DummyDevice."""

from __future__ import annotations

import itertools
import os
import time as _time

import numpy as np

from pyroinst import current_job, job, monitor

_serials = itertools.count(1)


class DummyDevice:
    """A stand-in instrument: identifies itself slowly and measures random data.

    Every instance has its own serial number. ``idn()`` takes ``idn_delay`` seconds, like
    a slow instrument; ``measure(time)`` is a job of ``time`` milliseconds that publishes
    its points as it takes them; ``temperature()`` is monitored once a second.
    """

    def __init__(self, idn_delay: float = 2.0, seed: int | None = None) -> None:
        self.idn_delay = float(idn_delay)
        self.serial = f"DMY{os.getpid() % 100000:05d}-{next(_serials):04d}"
        self._rng = np.random.default_rng(seed)
        self.initialized = False
        self._temperature = 21.0
        self._gain = 1.0

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

        Publishes the points taken since the last step (a chunk every 20 ms) while it runs,
        reports progress, and stops within 100 ms when cancelled.
        """
        points = int(time)
        if points < 0:
            raise ValueError(f"measure time must be >= 0 ms, got {time}")
        ctx = current_job()
        data = self._rng.random(points)  # never written again: chunks need no copy
        duration = points / 1000.0
        start = _time.monotonic()
        step = 0.02
        sent = 0
        while True:
            elapsed = _time.monotonic() - start
            if elapsed >= duration:
                break
            taken = int(points * elapsed / duration)
            if taken > sent:
                ctx.publish(data[sent:taken])
                sent = taken
            ctx.set_progress(elapsed / duration, f"{int(elapsed * 1000)} of {points} ms")
            ctx.sleep(min(step, duration - elapsed))
        if points > sent:
            ctx.publish(data[sent:])
        ctx.set_progress(1.0, f"{points} of {points} ms")
        return data

    @monitor(period=1.0)
    def temperature(self) -> float:
        """The (simulated) temperature of the instrument in °C; monitored every second."""
        self._temperature += float(self._rng.normal(0.0, 0.02))
        return round(self._temperature, 3)

    @property
    def gain(self) -> float:
        """The amplifier gain setting (1 to 1000); a property to read and write."""
        return self._gain

    @gain.setter
    def gain(self, value: float) -> None:
        value = float(value)
        if not 1.0 <= value <= 1000.0:
            raise ValueError(f"gain must be between 1 and 1000, got {value:g}")
        self._gain = value

    def close(self) -> None:
        """Release the instrument (nothing to release for a dummy)."""
        self.initialized = False

"""A bench digital multimeter speaking the common SCPI subset, over a serial link."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from devices.scpi import SCPIInstrument
from pyroinst import current_job, job
from pyroinst.errors import ResponseError

__all__ = ["Multimeter", "FUNCTIONS"]

log = logging.getLogger(__name__)

#: Measurement functions, as SCPI names them.
FUNCTIONS = ("VOLT:DC", "VOLT:AC", "CURR:DC", "CURR:AC", "RES", "FRES")
#: What SCPI meters return for an overload.
OVERLOAD = 9.9e37


class Multimeter(SCPIInstrument):
    """A bench digital multimeter (SCPI: CONF, READ?, MEAS?, SAMP:COUN, TRIG:SOUR, INIT, FETC?).

    ``Multimeter(port, **link_options)``: ``port`` is a device path, a pyserial URL or an
    open pyserial port. Readings are floats in SI units (V, A, Ω); an overload reads as
    ``inf`` (with its sign), as SCPI meters report it with 9.9E37.
    """

    def __init__(self, port: Any, **link_options: Any) -> None:
        super().__init__(port, **link_options)
        self.function = "VOLT:DC"

    @staticmethod
    def _function(function: str) -> str:
        name = str(function).upper()
        if name not in FUNCTIONS:
            raise ValueError(f"function must be one of {', '.join(FUNCTIONS)}, got {function!r}")
        return name

    def configure(self, function: str = "VOLT:DC", range: float | None = None) -> None:  # noqa: A002
        """Select the measurement function (e.g. "VOLT:DC") and range (None: auto)."""
        name = self._function(function)
        self.write(f"CONF:{name}" if range is None else f"CONF:{name} {float(range):g}")
        self.check_errors()
        self.function = name

    def _parse(self, reply: str, command: str) -> float:
        try:
            value = float(reply)
        except ValueError:
            raise ResponseError(
                f"{command} answered {reply!r}, not a number",
                raw=reply.encode(errors="replace"),
                command=command,
            ) from None
        if abs(value) >= OVERLOAD:
            log.warning("overload on %s", self.function)
            return math.copysign(math.inf, value)
        return value

    def read(self) -> float | np.ndarray:
        """One reading with the present configuration (``READ?``), a float.

        After ``set_sample_count(n)`` with n > 1, READ? answers n readings: then an array.
        """
        reply = self.query("READ?")
        if "," in reply:
            return np.array([self._parse(v, "READ?") for v in reply.split(",")], np.float64)
        return self._parse(reply, "READ?")

    def measure(self, function: str = "VOLT:DC") -> float:
        """Configure for ``function`` with auto range and take one reading (``MEAS:...?``)."""
        name = self._function(function)
        value = self._parse(self.query(f"MEAS:{name}?"), f"MEAS:{name}?")
        self.function = name
        return value

    def set_sample_count(self, count: int) -> None:
        """Readings per trigger (``SAMP:COUN``)."""
        self.write(f"SAMP:COUN {int(count)}")
        self.check_errors()

    def set_trigger_source(self, source: str = "IMM") -> None:
        """Trigger source: IMM, BUS or EXT (``TRIG:SOUR``)."""
        self.write(f"TRIG:SOUR {source.upper()}")
        self.check_errors()

    def initiate(self) -> None:
        """Start a measurement (``INIT``); fetch the readings with ``fetch()``."""
        self.write("INIT")

    def fetch(self) -> np.ndarray:
        """The readings of the last ``initiate()`` (``FETC?``) as a float64 array."""
        reply = self.query("FETC?")
        return np.array([self._parse(v, "FETC?") for v in reply.split(",")], dtype=np.float64)

    @job
    def acquire(self, n: int, interval: float = 0.0) -> np.ndarray:
        """Take ``n`` readings, ``interval`` seconds apart; a float64 array (a job)."""
        n = int(n)
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        ctx = current_job()
        out = np.empty(n, dtype=np.float64)
        for i in range(n):
            ctx.check_cancelled()
            out[i] = self.read()
            ctx.set_progress((i + 1) / n, f"{i + 1} of {n} readings")
            if interval and i + 1 < n:
                ctx.sleep(interval)
        return out

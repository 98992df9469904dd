"""A QCoDeS driver for the tests: a meter whose reading follows another instrument."""

from __future__ import annotations

from typing import Any

from qcodes.instrument import Instrument, VisaInstrument
from qcodes.validators import Numbers


class Meter(Instrument):
    """Reads twice the ``ch1`` of the instrument named ``source`` (plus ``offset``)."""

    def __init__(self, name: str, source: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._source = source
        self.add_parameter(
            "v",
            unit="V",
            label="Voltage",
            get_cmd=lambda: 2 * Instrument.find_instrument(self._source).ch1() + self.offset(),
        )
        self.add_parameter(
            "offset", unit="V", initial_value=0.0, get_cmd=None, set_cmd=None, vals=Numbers(-1, 1)
        )


class SimSource(VisaInstrument):
    """A QCoDeS VISA driver of a voltage source (simulated by pyvisa-sim: sims/source.yaml)."""

    default_terminator = "\n"

    def __init__(self, name: str, address: str, **kwargs: Any) -> None:
        super().__init__(name, address, **kwargs)
        self.add_parameter(
            "voltage",
            unit="V",
            label="Output voltage",
            get_cmd="VOLT?",
            set_cmd="VOLT {}",
            get_parser=float,
            vals=Numbers(-10, 10),
        )

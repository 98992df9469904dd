"""The Multimeter driver against exact scripted command/reply sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from devices.multimeter import Multimeter
from devices.testing import ScriptedPort
from pyroinst import InstrumentError, ResponseError

NO_ERROR = ("SYST:ERR?", '+0,"No error"')


def test_idn_configure_read():
    with ScriptedPort(
        [
            ("*IDN?", "ACME,DMM-1,42,1.0"),
            ("CONF:VOLT:DC 10", None),
            NO_ERROR,
            ("READ?", "+1.23400000E+00"),
            ("CONF:RES", None),
            NO_ERROR,
            ("READ?", "+9.90000000E+37"),
        ]
    ) as port:
        dmm = Multimeter(port)
        assert dmm.idn() == "ACME,DMM-1,42,1.0"
        dmm.configure("VOLT:DC", 10)
        assert dmm.read() == pytest.approx(1.234)
        dmm.configure("res")
        assert math.isinf(dmm.read())  # overload


def test_configure_reports_instrument_error():
    with ScriptedPort(
        [
            ("CONF:VOLT:DC 1e+06", None),
            ("SYST:ERR?", '-222,"Data out of range"'),
            NO_ERROR,
        ]
    ) as port:
        dmm = Multimeter(port)
        with pytest.raises(InstrumentError) as info:
            dmm.configure("VOLT:DC", 1e6)
        assert info.value.code == -222 and info.value.description == "Data out of range"
        assert dmm.function == "VOLT:DC"


def test_check_errors_drains_the_queue():
    with ScriptedPort(
        [
            ("SYST:ERR?", '-113,"Undefined header"'),
            ("SYST:ERR?", '-104,"Data type error"'),
            NO_ERROR,
        ]
    ) as port:
        with pytest.raises(InstrumentError, match="-113: Undefined header.*1 more"):
            Multimeter(port).check_errors()


def test_unknown_function_is_refused_before_sending():
    with ScriptedPort([]) as port:
        with pytest.raises(ValueError, match="VOLT:DC"):
            Multimeter(port).configure("VOLTS")


def test_unparseable_reading():
    with ScriptedPort([("READ?", "#!garbage")]) as port:
        with pytest.raises(ResponseError, match="not a number"):
            Multimeter(port).read()


def test_measure_samples_fetch_reset():
    with ScriptedPort(
        [
            ("MEAS:CURR:DC?", "+1.25000000E-02"),
            ("SAMP:COUN 3", None),
            NO_ERROR,
            ("TRIG:SOUR BUS", None),
            NO_ERROR,
            ("INIT", None),
            ("FETC?", "+1.0E+00,+2.0E+00,+3.0E+00"),
            ("*RST", None),
            ("*OPC?", "1"),
            ("*CLS", None),
        ]
    ) as port:
        dmm = Multimeter(port)
        assert dmm.measure("CURR:DC") == pytest.approx(0.0125)
        dmm.set_sample_count(3)
        dmm.set_trigger_source("bus")
        dmm.initiate()
        assert dmm.fetch().tolist() == [1.0, 2.0, 3.0]
        dmm.reset()
        dmm.clear()


def test_acquire_without_server():
    with ScriptedPort([("READ?", f"+{i}.0E+00") for i in range(4)]) as port:
        data = Multimeter(port).acquire(4)
    assert data.dtype == np.float64 and data.tolist() == [0.0, 1.0, 2.0, 3.0]

"""Tests against a real meter: skipped unless PYROINST_DMM_PORT names its port."""

from __future__ import annotations

import os

import pytest

from devices.multimeter import Multimeter

PORT = os.environ.get("PYROINST_DMM_PORT")
pytestmark = pytest.mark.skipif(
    not PORT, reason="no hardware: set PYROINST_DMM_PORT (and PYROINST_DMM_BAUDRATE) to run"
)


def test_real_multimeter():
    dmm = Multimeter(PORT, baudrate=int(os.environ.get("PYROINST_DMM_BAUDRATE", "9600")))
    try:
        assert dmm.idn()
        dmm.clear()
        dmm.configure("VOLT:DC")
        assert isinstance(dmm.read(), float)
        dmm.check_errors()
    finally:
        dmm.close()

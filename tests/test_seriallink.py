"""SerialLink over pyserial's loop:// and against missing ports; the scripted helper itself."""

from __future__ import annotations

import pytest
import serial

from devices.seriallink import SerialLink
from devices.testing import ScriptedPort
from pyroinst import DeviceConnectionError, DeviceTimeout, ResponseError


def test_loop_query_echoes():
    with SerialLink("loop://", timeout=0.2) as link:
        assert link.query("HELLO") == "HELLO"  # loop:// reads back what was written
        link.write("A")
        assert link.read() == "A"


def test_loop_terminations_and_encoding():
    link = SerialLink(
        "loop://",
        timeout=0.2,
        write_termination="\r\n",
        read_termination="\r\n",
        encoding="latin-1",
    )
    assert link.query("Grüße") == "Grüße"
    link.close()


def test_no_reply_is_a_timeout_not_a_hang():
    link = SerialLink("loop://", timeout=0.1)
    with pytest.raises(DeviceTimeout) as info:
        link.read()
    assert "no reply" in str(info.value) and "loop://" in str(info.value)
    link.close()


def test_partial_reply_is_reported():
    link = SerialLink("loop://", timeout=0.1)
    link._port.write(b"PARTIAL")  # no line end
    with pytest.raises(DeviceTimeout) as info:
        link.read()
    assert info.value.partial == b"PARTIAL"
    assert "partial reply b'PARTIAL'" in str(info.value)
    link.close()


def test_undecodable_reply():
    link = SerialLink("loop://", timeout=0.1)
    link._port.write(b"\xff\xfe\n")
    with pytest.raises(ResponseError) as info:
        link.read()
    assert info.value.raw == b"\xff\xfe\n" and "baudrate" in str(info.value)
    link.close()


def test_stale_bytes_are_discarded_before_a_command():
    link = SerialLink("loop://", timeout=0.1)
    link._port.write(b"late reply\n")
    assert link.query("NOW") == "NOW"
    link.close()


def test_missing_port():
    with pytest.raises(DeviceConnectionError) as info:
        SerialLink("/dev/does-not-exist-pyroinst", timeout=0.1)
    assert "/dev/does-not-exist-pyroinst" in str(info.value)
    assert info.value.port == "/dev/does-not-exist-pyroinst"


def test_open_pyserial_port_is_accepted():
    port = serial.serial_for_url("loop://", timeout=0.1)
    link = SerialLink(port)
    assert link.query("X") == "X"
    link.close()
    link.close()  # idempotent
    assert not port.is_open


def test_bad_settings():
    with pytest.raises(ValueError, match="parity"):
        SerialLink("loop://", parity="Q")


def test_scripted_port_asserts_order_and_use():
    port = ScriptedPort([("A?", "1"), ("B", None)])
    link = SerialLink(port)
    with pytest.raises(AssertionError, match="expected command 'A\\?', got 'B'"):
        link.write("B")
    port = ScriptedPort([("A?", "1"), ("B", None)])
    link = SerialLink(port)
    assert link.query("A?") == "1"
    with pytest.raises(AssertionError, match="never used"):
        port.verify()
    link.write("B")
    port.verify()

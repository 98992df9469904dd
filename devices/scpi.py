"""SCPIInstrument: the common commands of SCPI instruments, on a SerialLink."""

from __future__ import annotations

import logging
import re
from typing import Any

from devices.seriallink import SerialLink
from pyroinst.errors import InstrumentError, ResponseError

__all__ = ["SCPIInstrument", "parse_error"]

log = logging.getLogger(__name__)

_ERROR_RE = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


def parse_error(reply: str) -> tuple[int, str]:
    """``'-113,"Undefined header"'`` -> ``(-113, "Undefined header")`` (ResponseError if not)."""
    match = _ERROR_RE.match(reply)
    if not match:
        raise ResponseError(
            f"not a SCPI error reply: {reply!r}", raw=reply.encode(), command="SYST:ERR?"
        )
    return int(match.group(1)), match.group(2)


class SCPIInstrument:
    """An instrument speaking SCPI over a serial link.

    ``SCPIInstrument(port, **link_options)``: ``port`` is a device path, a pyserial URL,
    an open pyserial port, or a ready SerialLink; ``link_options`` go to SerialLink
    (baudrate, timeout, terminations...).
    """

    def __init__(self, port: Any, **link_options: Any) -> None:
        self.link = port if isinstance(port, SerialLink) else SerialLink(port, **link_options)

    def write(self, command: str) -> None:
        """Send a command that has no reply."""
        self.link.write(command)

    def query(self, command: str) -> str:
        """Send a query and return its reply."""
        return self.link.query(command)

    def idn(self) -> str:
        """The identification string (``*IDN?``)."""
        return self.query("*IDN?")

    def reset(self) -> None:
        """Reset to the power-on state (``*RST``) and wait until done."""
        self.write("*RST")
        self.wait_complete()

    def clear(self) -> None:
        """Clear the status registers and the error queue (``*CLS``)."""
        self.write("*CLS")

    def wait_complete(self) -> None:
        """Wait until pending operations are complete (``*OPC?`` answers 1)."""
        reply = self.query("*OPC?")
        if reply.strip() not in ("1", "+1"):
            raise ResponseError(
                f"*OPC? answered {reply!r}, expected 1", raw=reply.encode(), command="*OPC?"
            )

    def errors(self) -> list[tuple[int, str]]:
        """Read the error queue (``SYST:ERR?``) until it says no error; oldest first."""
        found = []
        for _ in range(64):  # a queue holds a few dozen at most; never loop forever
            code, text = parse_error(self.query("SYST:ERR?"))
            if code == 0:
                return found
            found.append((code, text))
        return found

    def check_errors(self) -> None:
        """Raise InstrumentError(code, description) for the first error in the queue."""
        found = self.errors()
        if found:
            code, text = found[0]
            more = f" (and {len(found) - 1} more: {found[1:]})" if len(found) > 1 else ""
            raise InstrumentError(code, text + more, errors=found)

    def close(self) -> None:
        """Close the link."""
        self.link.close()

"""A scripted-protocol stand-in for a pyserial port, for driver unit tests.

::

    port = ScriptedPort([("*IDN?", "ACME,DMM,1,1.0"), ("CONF:VOLT:DC", None)])
    dmm = Multimeter(port)
    assert dmm.idn() == "ACME,DMM,1,1.0"
    dmm.configure("VOLT:DC")
    port.verify()            # every step used

Each step is ``(command, reply)``: the driver must write exactly ``command`` (plus the
write termination) next; ``reply`` (a str, bytes for raw replies, or None for no reply)
is then what it reads. A command out of order fails at once with both sides shown;
``verify()`` fails if steps were left over.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ScriptedPort"]


class ScriptedPort:
    """A fake pyserial port replaying an exact command/reply script."""

    def __init__(
        self,
        script: list[tuple[str, Any]],
        write_termination: str = "\n",
        read_termination: str = "\n",
        encoding: str = "ascii",
    ) -> None:
        self.script = list(script)
        self.position = 0
        self.write_termination = write_termination
        self.read_termination = read_termination
        self.encoding = encoding
        self.port = "scripted"
        self.is_open = True
        self.timeout = 0.0
        self._pending = b""
        self._written = b""
        self.log: list[tuple[str, Any]] = []

    # -- the part of pyserial's interface SerialLink uses ----------------------------------
    @property
    def in_waiting(self) -> int:
        """Bytes that arrived before anyone asked (always 0: replies follow commands)."""
        return 0

    def write(self, data: bytes) -> int:
        """Take bytes from the driver; each complete command is checked against the script."""
        self._written += bytes(data)
        term = self.write_termination.encode(self.encoding)
        while term in self._written:
            raw, self._written = self._written.split(term, 1)
            self._check(raw.decode(self.encoding))
        return len(data)

    def _check(self, command: str) -> None:
        if self.position >= len(self.script):
            raise AssertionError(f"unexpected command {command!r}: the script has ended")
        expected, reply = self.script[self.position]
        if command != expected:
            raise AssertionError(
                f"step {self.position + 1}: expected command {expected!r}, got {command!r}"
            )
        self.position += 1
        self.log.append((command, reply))
        if reply is not None:
            data = reply if isinstance(reply, bytes) else reply.encode(self.encoding)
            if not isinstance(reply, bytes):
                data += self.read_termination.encode(self.encoding)
            self._pending += data

    def flush(self) -> None:
        """Nothing to flush."""

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes of the pending reply."""
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def read_until(self, expected: bytes = b"\n", size: int | None = None) -> bytes:
        """The pending reply up to and including ``expected`` (all of it if absent)."""
        index = self._pending.find(expected)
        end = len(self._pending) if index < 0 else index + len(expected)
        data, self._pending = self._pending[:end], self._pending[end:]
        return data

    def close(self) -> None:
        """Mark closed."""
        self.is_open = False

    def open(self) -> None:
        """Mark open."""
        self.is_open = True

    # -- for the test -----------------------------------------------------------------------
    def verify(self) -> None:
        """Fail unless every step of the script was used and every reply was read."""
        left = self.script[self.position :]
        if left:
            raise AssertionError(f"{len(left)} scripted step(s) never used: {left}")
        if self._pending:
            raise AssertionError(f"reply bytes never read: {self._pending!r}")

    def __enter__(self) -> ScriptedPort:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.verify()

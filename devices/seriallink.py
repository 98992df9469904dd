"""A text-protocol link over pyserial: one conversation at a time, clear errors.

``SerialLink(port, ...)`` opens a device path (``/dev/ttyUSB0``), any pyserial URL
(``loop://``, ``socket://host:port``, ``rfc2217://host:port``) or takes an already-open
pyserial port. ``write``, ``read`` and ``query`` hold a lock, so one command and its reply
are never interleaved with another thread's. Traffic is logged at DEBUG.

Errors (from ``pyroinst.errors``, so clients get them with their own type):

* no reply, or no complete line, in time: ``DeviceTimeout`` (command, partial reply);
* port missing or lost: ``DeviceConnectionError`` (port); a lost port is reopened on the
  next call, and the log says so;
* bytes that do not decode: ``ResponseError`` (raw bytes).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import serial

from pyroinst.errors import DeviceConnectionError, DeviceTimeout, ResponseError

__all__ = ["SerialLink"]

log = logging.getLogger(__name__)

_PARITIES = {
    "N": serial.PARITY_NONE,
    "E": serial.PARITY_EVEN,
    "O": serial.PARITY_ODD,
    "M": serial.PARITY_MARK,
    "S": serial.PARITY_SPACE,
}


class SerialLink:
    """A serial (or serial-over-network) line carrying text commands and replies.

    Arguments: ``port`` (path, pyserial URL, or an open pyserial port); ``baudrate``,
    ``bytesize``, ``parity`` ("N", "E", "O", "M", "S"), ``stopbits``; ``timeout``
    (seconds to wait for a complete reply); ``write_termination`` and
    ``read_termination`` (appended to commands, expected at the end of replies);
    ``encoding``.
    """

    def __init__(
        self,
        port: Any,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        timeout: float = 1.0,
        write_termination: str = "\n",
        read_termination: str = "\n",
        encoding: str = "ascii",
    ) -> None:
        if parity not in _PARITIES:
            raise ValueError(f"parity must be one of {', '.join(_PARITIES)}, got {parity!r}")
        if not read_termination:
            raise ValueError("read_termination must not be empty")
        self.settings = {
            "baudrate": int(baudrate),
            "bytesize": int(bytesize),
            "parity": _PARITIES[parity],
            "stopbits": stopbits,
            "timeout": float(timeout),
            "write_timeout": float(timeout),
        }
        self.write_termination = write_termination
        self.read_termination = read_termination
        self.encoding = encoding
        self._lock = threading.RLock()
        self._last_command: str | None = None
        self._lost = False
        if isinstance(port, str):
            self.port_name = port
            self._port: Any = None
            self._open()
        else:
            self.port_name = (
                getattr(port, "port", None) or getattr(port, "name", None) or repr(port)
            )
            self._port = port

    # -- opening and closing -------------------------------------------------------------
    def _open(self) -> None:
        try:
            port = serial.serial_for_url(self.port_name, do_not_open=True, **self.settings)
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceConnectionError(
                f"cannot open serial port {self.port_name}: {exc}", port=self.port_name
            ) from None
        self._port = port
        log.debug("opened %s (%s)", self.port_name, self.settings)

    @property
    def is_open(self) -> bool:
        """True while the port is open."""
        return self._port is not None and bool(getattr(self._port, "is_open", True))

    def close(self) -> None:
        """Close the port (idempotent)."""
        with self._lock:
            port, self._port = self._port, None
            if port is not None:
                try:
                    port.close()
                except Exception:  # noqa: BLE001 - closing a lost port may fail; it is closed
                    log.debug("closing %s failed", self.port_name, exc_info=True)

    def _ensure_open(self) -> Any:
        if self._port is not None and not self._lost:
            return self._port
        if self._lost:
            log.info("serial port %s was lost; reopening it", self.port_name)
            self.close()
        self._open()
        if self._lost:
            log.info("serial port %s reopened", self.port_name)
            self._lost = False
        return self._port

    def _connection_lost(self, exc: BaseException) -> DeviceConnectionError:
        self._lost = True
        log.warning("serial port %s lost: %s", self.port_name, exc)
        return DeviceConnectionError(
            f"serial port {self.port_name} lost: {exc} (it will be reopened on the next call)",
            port=self.port_name,
        )

    # -- talking ----------------------------------------------------------------------------
    def write(self, command: str) -> None:
        """Send ``command`` plus the write termination."""
        with self._lock:
            log.debug("%s <- %r", self.port_name, command)
            self._write(command)

    def read(self) -> str:
        """Read one reply line (without its termination)."""
        with self._lock:
            reply = self._read()
            log.debug("%s -> %r", self.port_name, reply)
            return reply

    def query(self, command: str) -> str:
        """Send ``command`` and return its reply line; nothing else can talk in between."""
        with self._lock:
            self.write(command)
            return self.read()

    def _write(self, command: str) -> None:
        port = self._ensure_open()
        try:
            waiting = port.in_waiting
            if waiting:
                # A late reply to an earlier, timed-out command must not answer this one.
                stale = port.read(waiting)
                log.debug("%s: discarded %d stale bytes %r", self.port_name, len(stale), stale)
            data = (command + self.write_termination).encode(self.encoding)
            port.write(data)
            port.flush()
        except serial.SerialTimeoutException:
            raise DeviceTimeout(
                f"could not send {command!r} to {self.port_name} within "
                f"{self.settings['timeout']:g} s (flow control? cable?)",
                command=command,
                port=self.port_name,
            ) from None
        except (serial.SerialException, OSError) as exc:
            raise self._connection_lost(exc) from None
        self._last_command = command

    def _read(self) -> str:
        port = self._ensure_open()
        term = self.read_termination.encode(self.encoding)
        try:
            raw = port.read_until(term)
        except (serial.SerialException, OSError) as exc:
            raise self._connection_lost(exc) from None
        command = self._last_command
        if not raw.endswith(term):
            what = f"partial reply {raw!r}" if raw else "no reply"
            raise DeviceTimeout(
                f"{what} to {command!r} from {self.port_name} within "
                f"{self.settings['timeout']:g} s (check power, cable, baudrate "
                f"{self.settings['baudrate']} and the read termination "
                f"{self.read_termination!r})",
                command=command,
                partial=bytes(raw),
                port=self.port_name,
            )
        try:
            return raw[: -len(term)].decode(self.encoding)
        except UnicodeDecodeError:
            raise ResponseError(
                f"reply to {command!r} from {self.port_name} is not {self.encoding} text: "
                f"{bytes(raw)!r} (wrong baudrate or encoding? baudrate is "
                f"{self.settings['baudrate']})",
                raw=bytes(raw),
                command=command,
                port=self.port_name,
            ) from None

    def __enter__(self) -> SerialLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SerialLink({self.port_name!r}, baudrate={self.settings['baudrate']})"

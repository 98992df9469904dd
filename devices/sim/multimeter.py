"""A simulated SCPI multimeter on a pseudo-terminal.

    python -m devices.sim.multimeter [--link PATH] [--value V] [--noise S] [options]

Opens a pseudo-terminal, prints its path (the first line of stdout, nothing else on that
line) and answers the SCPI subset of ``devices.multimeter`` until Ctrl-C or SIGTERM:
``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?``, ``SYST:ERR?``, ``CONF:<func> [range]``,
``CONF?``, ``READ?``, ``MEAS:<func>?``, ``SAMP:COUN n``, ``SAMP:COUN?``, ``TRIG:SOUR src``,
``INIT``, ``FETC?``, and ``SIM:VAL v`` (sets the true value of the present function).
Readings are the true value plus Gaussian noise; beyond 1.2 × the range they read
+9.9E37 (overload). Unknown commands put ``-113,"Undefined header"`` in the error queue.

``--link PATH`` also makes PATH a symlink to the pty (as udev does for USB adapters), so
a driver can keep one port name across simulator restarts.

Misbehaving, for tests: ``--delay S`` before each reply, ``--drop-every N`` (swallow
every Nth reply), ``--garbage-every N`` (every Nth reply is random non-text bytes),
``--truncate-every N`` (every Nth reply loses its line end), ``--close-after N`` (close
the port after N commands and exit), ``--baudrate B`` (a client whose port is set to
another baudrate gets garbage, as over a real line).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import signal
import sys
import termios
import tty
from pathlib import Path

FUNCTIONS = ("VOLT:DC", "VOLT:AC", "CURR:DC", "CURR:AC", "RES", "FRES")
DEFAULT_VALUES = {
    "VOLT:DC": 1.234,
    "VOLT:AC": 0.707,
    "CURR:DC": 0.0125,
    "CURR:AC": 0.004,
    "RES": 1000.0,
    "FRES": 1000.0,
}
DEFAULT_RANGES = {
    "VOLT:DC": 10.0,
    "VOLT:AC": 10.0,
    "CURR:DC": 1.0,
    "CURR:AC": 1.0,
    "RES": 1e6,
    "FRES": 1e6,
}
_BAUDS = {
    getattr(termios, f"B{b}"): b
    for b in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
    if hasattr(termios, f"B{b}")
}


class SimulatedMultimeter:
    """The instrument's state and its answers to command lines (no I/O here)."""

    def __init__(self, value: float | None = None, noise: float = 1e-4, seed: int | None = None):
        self.rng = random.Random(seed)
        self.noise = noise
        self.values = dict(DEFAULT_VALUES)
        if value is not None:
            self.values["VOLT:DC"] = value
        self.reset()

    def reset(self) -> None:
        """*RST: power-on configuration (the true values stay)."""
        self.function = "VOLT:DC"
        self.range: float | None = None
        self.samples = 1
        self.trigger = "IMM"
        self.errors: list[tuple[int, str]] = []
        self.fetched: list[float] = []

    def reading(self) -> float:
        """The true value plus noise, or the overload value beyond the range."""
        true = self.values[self.function]
        limit = (self.range or DEFAULT_RANGES[self.function]) * 1.2
        if abs(true) > limit:
            return 9.9e37 if true > 0 else -9.9e37
        return true + self.rng.gauss(0.0, self.noise)

    def error(self, code: int, text: str) -> None:
        """Queue an error (the queue keeps 20, like many meters)."""
        if len(self.errors) < 20:
            self.errors.append((code, text))

    def handle(self, line: str) -> str | None:
        """The reply to one command line (None: the command has no reply)."""
        cmd, _, arg = line.strip().partition(" ")
        cmd = cmd.upper()
        arg = arg.strip()
        if cmd == "*IDN?":
            return "pyroinst,SimulatedMultimeter,SIM0001,1.0"
        if cmd == "*RST":
            self.reset()
            return None
        if cmd == "*CLS":
            self.errors.clear()
            return None
        if cmd == "*OPC?":
            return "1"
        if cmd in ("SYST:ERR?", "SYSTEM:ERROR?"):
            if not self.errors:
                return '+0,"No error"'
            code, text = self.errors.pop(0)
            return f'{code:+d},"{text}"'
        if cmd.startswith("CONF:"):
            func = cmd[5:]
            if func not in FUNCTIONS:
                self.error(-113, "Undefined header")
                return None
            rng = None
            if arg and arg.upper() not in ("AUTO", "DEF", "DEFAULT"):
                try:
                    rng = float(arg)
                except ValueError:
                    self.error(-104, "Data type error")
                    return None
                if rng <= 0:
                    self.error(-222, "Data out of range")
                    return None
            self.function, self.range = func, rng
            return None
        if cmd == "CONF?":
            return f'"{self.function} {self.range if self.range else "AUTO"}"'
        if cmd == "READ?":
            return self._format([self.reading() for _ in range(self.samples)])
        if cmd.startswith("MEAS:") and cmd.endswith("?"):
            func = cmd[5:-1]
            if func not in FUNCTIONS:
                self.error(-113, "Undefined header")
                return None
            self.function, self.range = func, None
            return self._format([self.reading()])
        if cmd == "SAMP:COUN":
            try:
                count = int(arg)
            except ValueError:
                self.error(-104, "Data type error")
                return None
            if not 1 <= count <= 50000:
                self.error(-222, "Data out of range")
                return None
            self.samples = count
            return None
        if cmd == "SAMP:COUN?":
            return str(self.samples)
        if cmd == "TRIG:SOUR":
            if arg.upper() not in ("IMM", "BUS", "EXT"):
                self.error(-224, "Illegal parameter value")
                return None
            self.trigger = arg.upper()
            return None
        if cmd == "INIT":
            self.fetched = [self.reading() for _ in range(self.samples)]
            return None
        if cmd == "FETC?":
            if not self.fetched:
                self.error(-230, "Data corrupt or stale")
                return None
            return self._format(self.fetched)
        if cmd == "SIM:VAL":
            try:
                self.values[self.function] = float(arg)
            except ValueError:
                self.error(-104, "Data type error")
            return None
        self.error(-113, "Undefined header")
        return None

    @staticmethod
    def _format(values: list[float]) -> str:
        return ",".join(f"{v:+.8E}" for v in values)


def _client_baud(fd: int) -> int | None:
    try:
        return _BAUDS.get(termios.tcgetattr(fd)[5])
    except termios.error:
        return None


def serve(args: argparse.Namespace) -> int:
    """Run the simulator on a new pty until a signal (or --close-after)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    link = Path(args.link) if args.link else None
    if link is not None:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(path)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(path, flush=True)  # only now: a signal from here on ends the loop cleanly
    sim = SimulatedMultimeter(args.value, args.noise, args.seed)
    buffer = b""
    commands = replies = 0
    try:
        while not stop:
            try:
                ready, _, _ = select.select([master], [], [], 0.2)
            except InterruptedError:
                continue
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:
                continue  # no client has the port open just now
            buffer += data
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                commands += 1
                if args.close_after and commands > args.close_after:
                    return 0  # the port disappears
                line = raw.decode("ascii", errors="replace").strip("\r")
                reply = sim.handle(line)
                if reply is None:
                    continue
                replies += 1
                if args.delay:
                    select.select([], [], [], args.delay)
                if args.drop_every and replies % args.drop_every == 0:
                    continue
                out = reply.encode("ascii") + b"\n"
                baud = _client_baud(slave)
                if args.baudrate and baud and baud != args.baudrate:
                    # What a line at the wrong speed delivers: framing garbage.
                    out = bytes(sim.rng.randrange(128, 256) for _ in range(len(out))) + b"\n"
                elif args.garbage_every and replies % args.garbage_every == 0:
                    out = bytes(sim.rng.randrange(128, 256) for _ in range(12)) + b"\n"
                elif args.truncate_every and replies % args.truncate_every == 0:
                    out = out[: max(1, len(out) // 2)]
                os.write(master, out)
    finally:
        os.close(master)
        os.close(slave)
        if link is not None:
            with contextlib.suppress(FileNotFoundError):
                if link.is_symlink() and os.readlink(link) == path:
                    link.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse options and serve."""
    parser = argparse.ArgumentParser(
        prog="python -m devices.sim.multimeter", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--link", help="also make this path a symlink to the pty")
    parser.add_argument("--value", type=float, default=None, help="true DC voltage (V)")
    parser.add_argument("--noise", type=float, default=1e-4, help="noise sigma (SI units)")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--drop-every", type=int, default=0, help="swallow every Nth reply")
    parser.add_argument("--garbage-every", type=int, default=0, help="every Nth reply garbage")
    parser.add_argument(
        "--truncate-every", type=int, default=0, help="every Nth reply without its line end"
    )
    parser.add_argument(
        "--close-after", type=int, default=0, help="close the port after N commands"
    )
    parser.add_argument(
        "--baudrate", type=int, default=0, help="the instrument's baudrate (0: accept any)"
    )
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

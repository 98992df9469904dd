"""Device channels: named streams of ``(timestamp, value)`` that a served device publishes.

Two ways in, both for device authors:

* ``@pyroinst.monitor(period=S)`` on a method with no required arguments: while the
  device is served, the server calls it every ``S`` seconds and publishes ``(time,
  value)`` on the channel of the method's name. It takes the device lock like any call
  but never waits for it: when the device is busy (a job runs), that beat is skipped and
  counted. An exception is logged once per distinct message and published as an error
  item (a ``MonitorError`` value on pyroinst clients), and the monitor goes on.
* ``pyroinst.publish(driver, channel, value)`` from any thread of a served driver (a
  camera's frame callback, a background reader). A no-op when the driver is not served,
  so drivers run the same without a server.

Each channel keeps a bounded buffer (``buffers.StreamBuffer``); readers pull with
``channel_read`` (see ``device.py``).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .buffers import DEFAULT_BYTES, DEFAULT_ITEMS, StreamBuffer
from .errors import ChannelNotFound, DeviceDefinitionError
from .wireform import sendable

__all__ = ["monitor", "publish", "monitor_period", "Channel", "Channels", "MONITOR", "PUBLISHED"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

MONITOR = "monitor"
PUBLISHED = "published"


def monitor(period: float) -> Callable[[F], F]:
    """Mark a method (no required arguments) to be called every ``period`` seconds while
    the device is served; each value is published on the channel of the method's name.

    The method stays an ordinary method; without a server nothing calls it.
    """

    def mark(func: F) -> F:
        func._pyroinst_monitor = period  # type: ignore[attr-defined]
        return func

    if callable(period):
        raise TypeError("use @pyroinst.monitor(period=SECONDS), with the period")
    return mark


def monitor_period(func: Any) -> Any:
    """The period a method was marked with by ``@monitor``, or None."""
    return getattr(func, "_pyroinst_monitor", None)


def check_monitor(cls: type, name: str, func: Callable[..., Any]) -> float:
    """The monitor's period, or DeviceDefinitionError if it cannot be monitored."""
    period = monitor_period(func)
    try:
        period = float(period)
    except (TypeError, ValueError):
        period = float("nan")
    if not period > 0:
        raise DeviceDefinitionError(
            f"{cls.__name__}.{name}: @monitor(period={monitor_period(func)!r}) needs a "
            "period above 0 seconds",
            method=name,
        )
    try:
        params = list(inspect.signature(func).parameters.values())[1:]  # without self
    except (TypeError, ValueError):
        params = []
    required = [
        p.name
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise DeviceDefinitionError(
            f"{cls.__name__}.{name}: a @monitor method is called with no arguments, but it "
            f"requires {', '.join(required)}; give them defaults or monitor another method",
            method=name,
        )
    return period


class Channel:
    """One named channel of a device: its buffer and what ``channels()`` says of it."""

    def __init__(self, name: str, kind: str, period: float | None, bounds: tuple[int, int]):
        self.name = name
        self.kind = kind
        self.period = period
        self.buffer = StreamBuffer(*bounds)
        #: Monitor beats skipped because the device was busy.
        self.skipped = 0

    def info(self) -> dict[str, Any]:
        """What ``channels()`` lists: name, kind, period, last time, items, skipped beats."""
        return {
            "name": self.name,
            "kind": self.kind,
            "period": self.period,
            "last_time": self.buffer.last_time,
            "published": self.buffer.published,
            "skipped": self.skipped,
        }


# Which served device a driver instance is, for publish(): by id, the servant weakly held.
_served: dict[int, weakref.ReferenceType[Any]] = {}
_served_lock = threading.Lock()


def publish(driver: Any, channel: str, value: Any) -> None:
    """Publish ``value`` on ``driver``'s channel ``channel`` (a no-op when not served).

    Safe from any thread; never blocks. Raises NotSerializableError at once for a value
    that cannot be sent (the channel is left as it was).
    """
    ref = _served.get(id(driver))
    channels = ref() if ref is not None else None
    if channels is None or channels.driver is not driver:
        return
    channels.publish(str(channel), value)


class Channels:
    """The channels of one served device, and the thread that runs its monitors."""

    def __init__(
        self,
        driver: Any,
        device: str,
        lock: Any,
        bounds: tuple[int, int] = (DEFAULT_ITEMS, DEFAULT_BYTES),
    ) -> None:
        self.driver = driver
        self.device = device
        self.lock = lock
        self.bounds = bounds
        self._channels: dict[str, Channel] = {}
        self._guard = threading.Lock()
        self._monitors: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged: dict[str, str] = {}

    # -- publishing ----------------------------------------------------------------------------
    def channel(self, name: str, kind: str = PUBLISHED, period: float | None = None) -> Channel:
        """The channel ``name`` (made on first use)."""
        found = self._channels.get(name)
        if found is None:
            with self._guard:
                found = self._channels.get(name)
                if found is None:
                    found = self._channels[name] = Channel(name, kind, period, self.bounds)
        return found

    def publish(self, name: str, value: Any, when: float | None = None) -> None:
        """Append ``(time, value)`` to the channel ``name``."""
        item = sendable(value, lambda: f"device '{self.device}' published on channel {name!r}")
        self.channel(name).buffer.publish((time.time() if when is None else when, item))

    def get(self, name: str) -> Channel:
        """The channel ``name``; ChannelNotFound naming the channels there are."""
        found = self._channels.get(name)
        if found is None:
            known = ", ".join(sorted(self._channels)) or "none yet"
            raise ChannelNotFound(
                f"device '{self.device}' has no channel {name!r}; its channels: {known}",
                channel=name,
                device=self.device,
            )
        return found

    def infos(self) -> list[dict[str, Any]]:
        """Every channel's ``info()``, by name."""
        return [c.info() for _, c in sorted(self._channels.items())]

    # -- serving ---------------------------------------------------------------------------------
    def add_monitor(self, name: str, period: float) -> None:
        """Monitor the method ``name`` every ``period`` seconds (once started)."""
        self._monitors.append((name, period))
        self.channel(name, MONITOR, period)

    def start(self) -> None:
        """Let ``publish()`` reach these channels, and start the monitors."""
        with _served_lock:
            _served[id(self.driver)] = weakref.ref(self)
        if self._monitors and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, daemon=True, name=f"pyroinst-monitor-{self.device}"
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the monitors; ``publish()`` becomes a no-op for this driver."""
        with _served_lock:
            ref = _served.get(id(self.driver))
            if ref is not None and ref() is self:
                del _served[id(self.driver)]
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        start = time.monotonic()
        due = {name: start for name, _ in self._monitors}
        periods = dict(self._monitors)
        while not self._stop.is_set():
            now = time.monotonic()
            for name in [n for n, when in due.items() if when <= now]:
                self._beat(name)
                # On a fixed grid: a slow beat does not shift the ones after it.
                due[name] += periods[name] * max(1, int((now - due[name]) / periods[name]) + 1)
            self._stop.wait(max(0.0, min(due.values()) - time.monotonic()))

    def _beat(self, name: str) -> None:
        channel = self._channels[name]
        if not self.lock.acquire(f"monitor {name}()", 0):
            channel.skipped += 1  # busy (a job runs): never wait for the device
            return
        try:
            when = time.time()
            try:
                value = getattr(self.driver, name)()
            except Exception as exc:  # noqa: BLE001 - a monitor goes on after any failure
                self._failed(channel, when, exc)
                return
        finally:
            self.lock.release()
        try:
            self.publish(name, value, when)
        except Exception as exc:  # noqa: BLE001 - e.g. a value that cannot be sent
            self._failed(channel, when, exc)

    def _failed(self, channel: Channel, when: float, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self._logged.get(channel.name) != text:
            self._logged[channel.name] = text
            log.warning("monitor %s.%s() failed: %s", self.device, channel.name, text)
        error = {"__pyroinst__": "error", "type": type(exc).__name__, "message": str(exc)}
        channel.buffer.publish((when, error))

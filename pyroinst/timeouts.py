"""How long a pyroinst client waits: the defaults, and setting them for a process or a block.

A proxy from ``connect()`` waits at most ``default_timeout()`` seconds for a reply:
what ``set_default_timeout`` (or ``default_timeout_set``) set, else ``PYROINST_TIMEOUT``,
else ``CALL_TIMEOUT`` (30 s). Connecting takes at most ``CONNECT_TIMEOUT`` an attempt.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

from .errors import ConfigurationError

__all__ = [
    "CALL_TIMEOUT",
    "CONNECT_TIMEOUT",
    "PING_TIMEOUT",
    "RECONNECT_TIMEOUT",
    "SLACK",
    "default_timeout",
    "default_timeout_set",
    "set_default_timeout",
    "timeout_arg",
]

#: Seconds a DeviceProxy keeps trying to reach its device (re-resolving its name).
RECONNECT_TIMEOUT = 10.0
#: Seconds a call waits for its reply by default (``PYROINST_TIMEOUT`` overrides).
CALL_TIMEOUT = 30.0
#: Seconds one attempt to connect (TCP, TLS, handshake, proof) may take.
CONNECT_TIMEOUT = 5.0
#: Seconds a reply may take beyond a wait the server was asked to make.
SLACK = 0.5
#: Seconds the ping after a timed-out call gets (is the server there at all?).
PING_TIMEOUT = 1.0


_override: list[float | None] = []


def set_default_timeout(seconds: float | None) -> None:
    """Make ``seconds`` the call timeout of this process's new proxies and of job handles'
    calls (None: back to PYROINST_TIMEOUT, else CALL_TIMEOUT; inf or 0: no limit)."""
    _override[:] = [] if seconds is None else [timeout_arg(seconds)]


@contextlib.contextmanager
def default_timeout_set(seconds: float | None) -> Iterator[None]:
    """``set_default_timeout(seconds)`` inside the block (None: nothing changes), the
    previous default after it."""
    previous = list(_override)
    if seconds is not None:
        set_default_timeout(seconds)
    try:
        yield
    finally:
        _override[:] = previous


def default_timeout() -> float | None:
    """The call timeout of new proxies: what ``set_default_timeout`` set, else
    ``PYROINST_TIMEOUT`` (seconds; ``inf`` or ``0``: none), else CALL_TIMEOUT.
    ConfigurationError for a value that is not a number."""
    if _override:
        return _override[0]
    text = os.environ.get("PYROINST_TIMEOUT", "").strip()
    if not text:
        return CALL_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(
            f"PYROINST_TIMEOUT={text!r} is not a number of seconds (inf or 0: no limit)"
        ) from None
    return None if value <= 0 or math.isinf(value) else value


def timeout_arg(timeout: float | None) -> float | None:
    """A ``timeout`` argument as a proxy timeout: None is the default, inf or 0 none."""
    if timeout is None:
        return default_timeout()
    timeout = float(timeout)
    if math.isnan(timeout):
        raise ConfigurationError("timeout must be a number of seconds, not NaN")
    return None if timeout <= 0 or math.isinf(timeout) else timeout

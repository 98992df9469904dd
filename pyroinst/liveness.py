"""Which devices answer: one check per server, all servers at once, one deadline.

The devices of one server share its daemon, so one answer (or silence) speaks for all of
them. Every server is asked in parallel, and whatever has not answered when the overall
deadline passes counts as not answering: a lab with a frozen PC holding 50 devices
lists in about the deadline, not in 50 timeouts.

Reasons, as ``list --json`` and ``list_devices(alive=True)`` give them: ``"ok"``,
``"connection refused"`` (nothing listens there: the server stopped or crashed),
``"no answer within 1.5 s"`` (a hung, frozen or sleeping PC, or an unreachable network),
``"authentication failed"`` (the lab token does not match), ``"not served there"``
(another server now holds that port), or the error's own words.
"""

from __future__ import annotations

import concurrent.futures
import errno
import time
from collections.abc import Iterable
from typing import Any

import Pyro5.client
import Pyro5.errors

__all__ = ["check_servers", "check_one", "server_key", "DEFAULT_TIMEOUT", "MIN_CHECK", "OK"]

#: Seconds the whole check may take (``pyroinst list --timeout``).
DEFAULT_TIMEOUT = 1.5
OK = "ok"
#: Seconds a check gets at least, however late it starts.
MIN_CHECK = 0.5
#: Servers checked at once, at most (more wait for a free worker, within the deadline).
MAX_PARALLEL = 64


def server_key(device: dict[str, Any]) -> str:
    """Which server a device entry belongs to: its server id, else its daemon's address."""
    return device.get("server") or f"{device['host']}:{device['port']}"


def _reason(exc: BaseException, timeout: float) -> str:
    text = str(exc)
    if isinstance(exc, Pyro5.errors.TimeoutError) or "timed out" in text:
        return f"no answer within {timeout:g} s"
    if "authentication failed" in text:
        return "authentication failed"
    if "unknown object" in text:
        return "not served there (another server holds that port)"
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ConnectionRefusedError) or (
        isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
    ):
        return "connection refused"
    if "refused" in text.lower():
        return "connection refused"
    if "no free workers" in text:
        return "server busy (no free connection)"
    return text or type(exc).__name__


def check_one(uri: str, timeout: float) -> tuple[bool, str]:
    """(alive, reason) of the server of ``uri``, asked once on a new connection."""
    return _check(uri, timeout)


def _check(uri: str, timeout: float) -> tuple[bool, str]:
    proxy = Pyro5.client.Proxy(uri)
    proxy._pyroTimeout = timeout
    try:
        proxy.ping()
        return True, OK
    except Exception as exc:  # noqa: BLE001 - any failure is a reason
        return False, _reason(exc, timeout)
    finally:
        proxy._pyroRelease()


def check_servers(
    devices: Iterable[dict[str, Any]],
    timeout: float = DEFAULT_TIMEOUT,
    said: float | None = None,
) -> dict[str, tuple[bool | None, str]]:
    """``{server_key: (alive, reason)}`` for the servers of ``devices``, within ``timeout``.

    ``alive`` is None with reason "not checked" for a server that got no turn at all.
    ``said``: the deadline the reasons name (default ``timeout``), when part of the
    user's deadline was spent before the check began.
    """
    said = timeout if said is None else said
    first: dict[str, str] = {}
    for device in devices:
        first.setdefault(server_key(device), device["uri"])
    verdicts: dict[str, tuple[bool | None, str]] = {}
    if not first:
        return verdicts
    deadline = time.monotonic() + timeout
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=min(MAX_PARALLEL, len(first)), thread_name_prefix="pyroinst-liveness"
    )
    try:
        futures = {pool.submit(_within, uri, deadline, said): key for key, uri in first.items()}
        done, _ = concurrent.futures.wait(futures, timeout=max(0.0, timeout))
        for future, key in futures.items():
            if future in done:
                verdicts[key] = future.result()
            else:
                verdicts[key] = (False, f"no answer within {said:g} s")
    finally:
        # Checks still running end by themselves within their socket timeout.
        pool.shutdown(wait=False, cancel_futures=True)
    return verdicts


def _within(uri: str, deadline: float, timeout: float) -> tuple[bool | None, str]:
    left = deadline - time.monotonic()
    if left <= 0.01:
        return None, "not checked"
    alive, reason = _check(uri, left)
    if reason.startswith("no answer within"):
        reason = f"no answer within {timeout:g} s"  # the whole deadline, as the user set it
    return alive, reason

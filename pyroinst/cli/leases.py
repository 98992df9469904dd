"""The leases of reservations the command line made, kept for this user's later commands.

``pyroinst --owner alice reserve dev`` gets the lease's secret from the device; later
commands of the same user with the same owner and name server present it (``call``,
``job``, ``release``...). They are kept in ``leases.json`` in the state folder
(``pyroinst.identity.state_dir()``: ``PYROINST_STATE_DIR``, else
``~/.local/state/pyroinst``), readable by this user only; an expired lease is dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pyroinst import identity, naming

__all__ = ["recall", "remember", "forget"]

log = logging.getLogger(__name__)

#: Leases kept at most (the oldest go first).
MAX_LEASES = 1000


def _path() -> Path:
    return identity.state_dir() / "leases.json"


def _key(device: str, owner: str, ns_host: str | None, ns_port: int | None) -> str:
    host, port = naming.ns_address(ns_host, ns_port)
    return f"{host or 'default'}:{port or 'default'}/{device}/{owner}"


def _load() -> dict[str, Any]:
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(data: dict[str, Any]) -> None:
    path = _path()
    now = time.time()
    kept = {k: v for k, v in data.items() if isinstance(v, dict) and float(v.get("until", 0)) > now}
    kept = dict(sorted(kept.items(), key=lambda item: item[1]["until"])[-MAX_LEASES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".leases-", dir=path.parent)  # mode 0600
        with os.fdopen(fd, "w") as out:
            json.dump(kept, out)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning(
            "cannot keep the reservation's lease in %s (%s): later commands cannot use it",
            path,
            exc.strerror,
        )
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)


def remember(
    device: str, owner: str, ns: tuple[str | None, int | None], lease: str, until: float
) -> None:
    """Keep ``lease`` (a reservation of ``device`` by ``owner``) until ``until``."""
    data = _load()
    data[_key(device, owner, *ns)] = {"lease": lease, "until": float(until)}
    _save(data)


def recall(device: str, owner: str, ns: tuple[str | None, int | None]) -> str | None:
    """The kept lease of ``device`` for ``owner``, if any and not expired."""
    entry = _load().get(_key(device, owner, *ns))
    if not isinstance(entry, dict) or float(entry.get("until", 0)) <= time.time():
        return None
    lease = entry.get("lease")
    return lease if isinstance(lease, str) else None


def forget(device: str, owner: str, ns: tuple[str | None, int | None]) -> None:
    """Drop the kept lease of ``device`` for ``owner``."""
    data = _load()
    if data.pop(_key(device, owner, *ns), None) is not None:
        _save(data)

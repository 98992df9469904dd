"""Which Pyro5 versions pyroinst is tested with, and what it does outside them.

pyroinst replaces pieces of Pyro5's message path (see ``fastwire``) that are Pyro5
internals, not its public API. They are put in only for the Pyro5 versions the test suite
ran against (``PYRO5_TESTED``, the same bounds as the dependency in ``pyproject.toml``).
With any other Pyro5 version, ``import pyroinst`` logs one warning naming the version and
the tested range, and everything works through Pyro5's plain message path: arrays still
travel as raw bytes inside the serialized payload, only large ones more slowly.

``PYROINST_FASTWIRE=0`` in the environment turns the fast array path off on purpose, in a
client, a server or both; each side then behaves as a peer without it.
"""

from __future__ import annotations

import logging
import os
import re

import Pyro5

__all__ = ["PYRO5_TESTED", "pyro5_version", "pyro5_tested", "fastwire_wanted", "version_tuple"]

log = logging.getLogger(__name__)

#: The lowest and highest Pyro5 versions the test suite ran against (both included).
PYRO5_TESTED = ("5.15", "5.17")


def version_tuple(version: str) -> tuple[int, ...]:
    """``"5.17"`` -> ``(5, 17)``; pre-release and local parts are ignored."""
    numbers = re.match(r"\d+(?:\.\d+)*", version.strip())
    if numbers is None:
        return ()
    return tuple(int(n) for n in numbers.group(0).split("."))


def pyro5_version() -> str:
    """The installed Pyro5's version string."""
    return str(getattr(Pyro5, "__version__", "0"))


def pyro5_tested(version: str | None = None) -> bool:
    """True if ``version`` (default: the installed Pyro5's) is within ``PYRO5_TESTED``."""
    found = version_tuple(pyro5_version() if version is None else version)
    low, high = (version_tuple(v) for v in PYRO5_TESTED)
    # 5.17.1 counts as 5.17: compare as many parts as the bound has.
    return bool(found) and low <= found[: len(low)] and found[: len(high)] <= high


def fastwire_wanted() -> bool:
    """Whether to put the fast array path into Pyro5 (logs why not, once per call)."""
    setting = os.environ.get("PYROINST_FASTWIRE", "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        log.info("PYROINST_FASTWIRE=%s: large arrays travel through Pyro5's plain path", setting)
        return False
    if not pyro5_tested():
        log.warning(
            "Pyro5 %s is outside the versions pyroinst is tested with (%s to %s): pyroinst "
            "leaves Pyro5's message path as it is. Everything works; large arrays move more "
            "slowly. Install a tested Pyro5 (pip install 'Pyro5>=%s,<=%s') for full speed.",
            pyro5_version(),
            *PYRO5_TESTED,
            *PYRO5_TESTED,
        )
        return False
    return True

"""Network namespaces for tests: traffic that must never leave this machine's test hosts.

``namespaces_unavailable()`` says why namespaces cannot be made here (not root, no
``ip``), or None. ``Namespace`` is one namespace with its loopback up and, optionally, a
private address on an interface that exists only inside it; ``command()`` prefixes
a command to run in it. Names carry the process id so parallel runs do not collide.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

__all__ = ["namespaces_unavailable", "Namespace"]

_counter = itertools.count()


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"pyroinst-probe-{os.getpid()}"
    made = _run("ip", "netns", "add", probe)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe)
    return None


class Namespace:
    """One network namespace: loopback up, and ``address`` (CIDR) on an interface inside it."""

    def __init__(self, address: str | None = None) -> None:
        self.name = f"pyi{os.getpid() % 100000}-t{next(_counter)}"
        self.address = address

    def _sh(self, *args: str) -> None:
        done = _run(*args)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")

    def __enter__(self) -> Namespace:
        self._sh("ip", "netns", "add", self.name)
        try:
            self._sh("ip", "-n", self.name, "link", "set", "lo", "up")
            if self.address:
                # A veth pair with both ends inside: no dummy module needed, no way out.
                ip = ("ip", "-n", self.name)
                self._sh(*ip, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
                self._sh(*ip, "addr", "add", self.address, "dev", "eth0")
                self._sh(*ip, "link", "set", "eth1", "up")
                self._sh(*ip, "link", "set", "eth0", "up")
        except BaseException:
            _run("ip", "netns", "del", self.name)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _run("ip", "netns", "del", self.name)

    def command(self, *args: str) -> list[str]:
        """``args`` as a command that runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *args]

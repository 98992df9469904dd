"""Keeping an InstServer's devices registered with the name server.

``Registration`` is the part of ``InstServer`` that finds (or embeds) the name server,
registers each device with tags (device, class, host, server), refuses names held by a
live server, and, from a heartbeat thread, registers again whatever the name server lost
(one ``yplookup`` per beat for all of the server's names).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

import Pyro5.core
import Pyro5.errors
from Pyro5 import config as pyro_config

from .daemon import LIVENESS_TIMEOUT, Guarding, holder
from .errors import ConfigurationError, NameInUse, NameServerNotFound, PyroinstError
from .nameserver import EmbeddedNameServer
from .naming import CLASS_TAG, DEVICE_TAG, HOST_TAG, SERVER_TAG, locate_ns

if TYPE_CHECKING:
    from .device import DeviceServant

__all__ = ["Registration", "is_loopback"]

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True if ``host`` resolves to a loopback address."""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


class Registration:
    """Mixin of InstServer: the name server side of serving devices."""

    ns_host: str | None
    ns_port: int | None
    token: str | None
    guarding: Guarding
    id: str
    embed_ns: bool
    embedded_ns: EmbeddedNameServer | None
    heartbeat: float
    _daemon: Any
    _lock: threading.RLock
    _registered: dict[str, str]
    _servants: dict[str, Any]
    _stopped: bool

    # -- name server ---------------------------------------------------------------------------
    def _ensure_ns(self) -> None:
        try:
            with locate_ns(self.ns_host, self.ns_port, token=self.token) as ns:
                self._ns_location = (ns._pyroUri.host, ns._pyroUri.port)
                return
        except NameServerNotFound:
            if not self.embed_ns:
                raise
        host = self.ns_host or pyro_config.NS_HOST
        port = pyro_config.NS_PORT if self.ns_port is None else self.ns_port
        try:
            self.embedded_ns = EmbeddedNameServer(host, port, guarding=self.guarding).start()
        except OSError as exc:
            raise NameServerNotFound(
                f"no name server answered at {host}:{port}, and one cannot be started there: {exc}"
            ) from None
        # Later lookups must go to the embedded name server, also when port 0 chose one.
        self.ns_host, self.ns_port = self.embedded_ns.host, self.embedded_ns.port
        self._ns_location = (self.ns_host, self.ns_port)
        # Expected on a first start (the demo, a one-PC lab): not a problem, so INFO.
        log.info(
            "no name server found; started an embedded one at %s:%d", self.ns_host, self.ns_port
        )

    def _stop_embedded_ns(self) -> None:
        if self.embedded_ns is not None:
            self.embedded_ns.stop()
            self.embedded_ns = None

    def _metadata(self, servant: DeviceServant) -> set[str]:
        cls = type(servant._device)
        return {
            DEVICE_TAG,
            f"{CLASS_TAG}{cls.__module__}.{cls.__qualname__}",
            f"{HOST_TAG}{socket.gethostname()}",
            f"{SERVER_TAG}{self.id}",
        }

    def _address_towards_ns(self) -> str:
        """The local address this PC uses to reach the name server (else its host name)."""
        host, port = self._ns_location
        if host and not is_loopback(host):
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.connect((host, port or 9090))  # no packet is sent
                    return probe.getsockname()[0]
            except OSError:
                pass
        return socket.gethostname()

    def _check_reachable(self, name: str, uri: str) -> None:
        ns_host = self._ns_location[0]
        uri_host = Pyro5.core.URI(uri).host
        if ns_host and is_loopback(uri_host) and not is_loopback(ns_host):
            raise ConfigurationError(
                f"device {name!r} would be registered as {uri} in the name server at "
                f"{ns_host}, but {uri_host} is this PC's loopback address: other PCs cannot "
                'reach it. Serve on the lab network: host = "0.0.0.0" (or this PC\'s '
                'address) and advertise = "<this PC\'s name or address>" ([server] in the '
                "lab file, or --host/--advertise).",
                device=name,
            )

    def _publish(self, name: str, servant: DeviceServant) -> str:
        assert self._daemon is not None
        uri = str(self._daemon.register(servant, objectId=name))
        servant._uri = uri
        try:
            self._check_reachable(name, uri)
        except ConfigurationError:
            self._daemon.unregister(name)
            raise
        try:
            with locate_ns(self.ns_host, self.ns_port, token=self.token) as ns:
                try:
                    existing = ns.lookup(name)
                except Pyro5.errors.NamingError:
                    existing = None
                if existing is not None and str(existing) != uri:
                    alive, why = self._holds(str(existing))
                    if alive:
                        raise NameInUse(
                            f"the name {name!r} is held by a live server at {existing}; stop "
                            "that server, or serve this device under another name",
                            device=name,
                            uri=str(existing),
                        )
                    log.warning(
                        "replacing the registration of %r at %s (%s) with this server's at %s",
                        name,
                        existing,
                        why or "not answering",
                        uri,
                    )
                ns.register(name, uri, safe=False, metadata=self._metadata(servant))
        except BaseException:
            self._daemon.unregister(name)
            raise
        self._registered[name] = uri
        servant._start()
        log.info("registered %r at %s", name, uri)
        return uri

    def _heartbeat_loop(self) -> None:
        while not self._heartbeat_stop.wait(self.heartbeat):
            try:
                self.check_registrations()
            except Exception:  # noqa: BLE001 - the heartbeat must outlive any one failure
                log.exception("checking the registrations failed")

    def check_registrations(self) -> None:
        """Register again every name the name server lost (the heartbeat does this).

        A name now held by another live server is logged, not taken back; one held by a
        dead server is taken back.
        """
        with self._lock:
            entries = [(n, u, self._servants[n]) for n, u in self._registered.items()]
        if not entries:
            return
        try:
            ns_cm = locate_ns(
                self.ns_host, self.ns_port, timeout=LIVENESS_TIMEOUT, token=self.token
            )
        except NameServerNotFound as exc:
            if not self._ns_down:
                log.warning(
                    "name server unreachable (%s); will register again when it is back", exc
                )
                self._ns_down = True
            return
        with ns_cm as ns:
            if self._ns_down:
                log.info("name server reachable again")
                self._ns_down = False
            # One call for all of this server's names; only the missing ones are asked
            # about one by one (a thousand devices, a heartbeat: one round trip, not 1000).
            ours = ns.yplookup(meta_all={f"{SERVER_TAG}{self.id}"}, return_metadata=False)
            for name, uri, servant in entries:
                if str(ours.get(name)) == uri:
                    self._warned_taken.discard(name)
                    continue
                try:
                    current = str(ns.lookup(name))
                except Pyro5.errors.NamingError:
                    current = None
                if current == uri:
                    self._warned_taken.discard(name)
                    continue
                if not self._still_registered(name, uri):
                    continue  # removed meanwhile
                why = ""
                if current is not None:
                    alive, why = self._holds(current)
                    if alive and name not in self._warned_taken:
                        log.warning(
                            "the name %r is now held by another live server at %s; "
                            "not taking it back",
                            name,
                            current,
                        )
                        self._warned_taken.add(name)
                    if alive:
                        continue
                    if self.token is not None and why:
                        log.warning(
                            "the name %r was held by %s, which %s: registering it again at %s",
                            name,
                            current,
                            why,
                            uri,
                        )
                with self._lock:
                    # Removal wins: register only while the name is still ours to serve
                    # (remove_device holds this lock while it unregisters).
                    if not self._still_registered(name, uri):
                        continue
                    ns.register(name, uri, safe=False, metadata=self._metadata(servant))
                self._warned_taken.discard(name)
                log.info(
                    "registered %r again at %s (the name server had %s)",
                    name,
                    uri,
                    "lost it" if current is None else f"a dead entry {current}",
                )

    def _holds(self, uri: str) -> tuple[bool, str]:
        """Whether the server at ``uri`` rightly holds a name (see ``daemon.holder``)."""
        auth = getattr(self._daemon, "_pyroinst_auth", None)
        own = getattr(auth, "binding", None) or None
        return holder(uri, self.token, own)

    def _still_registered(self, name: str, uri: str) -> bool:
        return self._registered.get(name) == uri and not self._stopped

    def _unpublish(self, name: str, servant: DeviceServant) -> None:
        uri = self._registered.pop(name, None)
        if uri is not None:
            try:
                with locate_ns(self.ns_host, self.ns_port, token=self.token) as ns:
                    # Only our own entry: the name may meanwhile belong to another server.
                    try:
                        current = str(ns.lookup(name))
                    except Pyro5.errors.NamingError:
                        current = None
                    if current == uri:
                        ns.remove(name)
            except (PyroinstError, Pyro5.errors.PyroError) as exc:
                log.warning("could not remove %r from the name server: %s", name, exc)
        if self._daemon is not None:
            try:
                self._daemon.unregister(name)
            except Pyro5.errors.DaemonError:
                pass

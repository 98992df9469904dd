"""Pyro5's name server, embedded in a device server or run on its own for the lab.

``EmbeddedNameServer(host, port).start()`` runs one in a background thread of this
process; ``pyroinst ns`` (what ``nameserver.sh`` runs) runs one in the foreground, with
host and port from ``PYROINST_NS_HOST``/``PYROINST_NS_PORT``, else localhost:9090.
Pyro5 answers broadcast lookups only when the name server is bound to a non-loopback
address; on loopback no broadcast responder is started.

With ``storage`` (``pyroinst ns --storage PATH``, ``PYROINST_NS_STORAGE``) the
registrations are kept in an sqlite file in the layout of Pyro5's own SQL storage
(``Pyro5.nameserver.SqlStorage`` reads it): after a restart of the name server every name
is back at once, and entries of servers that died meanwhile are dropped by autoclean as
usual. Lookups are answered from memory and every change is written through
(``RememberingStorage``): Pyro5's own SQL storage opens the file for every lookup, which
makes a listing of thousands of names take seconds.
A storage file that cannot be used (not a database, a
folder, a place that cannot be written) is a ConfigurationError naming the file, raised
before anything is bound.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import Pyro5.core
import Pyro5.errors
import Pyro5.nameserver
import Pyro5.socketutil
from Pyro5 import config as pyro_config

from .admission import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS_PER_HOST,
    AdmissionDaemon,
)
from .auth import require_client_side
from .authserver import AuthDaemon
from .daemon import Guarding, secure
from .errors import ConfigurationError
from .handshakes import DEFAULT_MAX_PENDING_HANDSHAKES
from .tokens import own_token, resolve_keys

__all__ = [
    "EmbeddedNameServer",
    "ServerCleaner",
    "RememberingStorage",
    "DEFAULT_NS_HOST",
    "DEFAULT_NS_PORT",
    "check_storage",
]

log = logging.getLogger(__name__)

DEFAULT_NS_HOST = "localhost"
DEFAULT_NS_PORT = 9090


#: Seconds between the name server's checks of its entries (Pyro5's NS_AUTOCLEAN).
AUTOCLEAN_INTERVAL = 5.0
#: Seconds an entry's server must stay unreachable before the name server drops it.
AUTOCLEAN_UNREACHABLE = 10.0


def _enable_autoclean() -> None:
    """Let Pyro5's name server drop entries whose server stopped answering.

    A dead server's names then vanish from listings within about
    AUTOCLEAN_INTERVAL + AUTOCLEAN_UNREACHABLE seconds (15 s by default; 20 s at most),
    unless the user set PYRO_NS_AUTOCLEAN themselves.
    """
    if pyro_config.NS_AUTOCLEAN == 0:
        pyro_config.NS_AUTOCLEAN = AUTOCLEAN_INTERVAL
    cleaner = Pyro5.nameserver.AutoCleaner
    cleaner.max_unreachable_time = AUTOCLEAN_UNREACHABLE
    cleaner.loop_delay = 0.25  # also how long stopping the name server waits for it


def check_storage(path: str | Path) -> Path:
    """``path`` as a usable name-server storage file (made if missing), or
    ConfigurationError naming the file and what is wrong with it."""
    path = Path(path).expanduser().absolute()
    where = f"name server storage {str(path)!r}"
    if path.is_dir():
        raise ConfigurationError(f"{where} is a folder; give a file name (it is created)")
    if not path.parent.is_dir():
        raise ConfigurationError(f"{where}: the folder {str(path.parent)!r} does not exist")
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA schema_version").fetchone()  # not a database: DatabaseError
            db.execute("BEGIN IMMEDIATE")  # needs to be able to write
            db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise ConfigurationError(
            f"{where} cannot be used: {exc}. If it is damaged or not a name server's "
            "storage, move it away (a new one is made); if the place is read-only, "
            "choose another path."
        ) from None
    return path


class RememberingStorage(Pyro5.nameserver.MemoryStorage):
    """Pyro5's in-memory storage, written through to an sqlite file.

    Loaded from the file at start (Pyro5's SqlStorage layout: tables ``pyro_names`` and
    ``pyro_metadata``). Every change is committed to the file before the call returns,
    over one connection kept open, in WAL mode: a commit survives the name server's
    ``kill -9`` and costs a fraction of a millisecond. Lookups never touch the file.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        Pyro5.nameserver.SqlStorage(str(path))  # makes (or updates) Pyro5's tables
        self._db = db = sqlite3.connect(path, check_same_thread=False)
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Without it every metadata look-up or removal scans the whole table.
        db.execute("CREATE INDEX IF NOT EXISTS pyroinst_metadata_object ON pyro_metadata(object)")
        db.commit()
        # Two queries, not one a name (Pyro5's SqlStorage.everything is quadratic).
        metadata: dict[int, set[str]] = {}
        for object_id, item in db.execute("SELECT object, metadata FROM pyro_metadata"):
            metadata.setdefault(object_id, set()).add(item)
        for object_id, name, uri in db.execute("SELECT id, name, uri FROM pyro_names"):
            dict.__setitem__(self, name, (uri, frozenset(metadata.get(object_id, ()))))
        self._guard = threading.Lock()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._write(key, dict.__getitem__(self, key))

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._write(key, None)

    def clear(self) -> None:
        """Forget every name (in memory and in the file)."""
        names = list(self)
        super().clear()
        for name in names:
            self._write(name, None)

    def close(self) -> None:
        """Close the file."""
        with self._guard:
            self._db.close()

    def _write(self, name: str, value: Any) -> None:
        try:
            with self._guard, self._db:  # one transaction
                db = self._db
                old = db.execute("SELECT id FROM pyro_names WHERE name=?", (name,)).fetchone()
                if old is not None:
                    db.execute("DELETE FROM pyro_metadata WHERE object=?", old)
                    db.execute("DELETE FROM pyro_names WHERE id=?", old)
                if value is None:
                    return
                uri, metadata = value
                cursor = db.execute(
                    "INSERT INTO pyro_names(name, uri) VALUES(?,?)", (name, str(uri))
                )
                db.executemany(
                    "INSERT INTO pyro_metadata(object, metadata) VALUES(?,?)",
                    [(cursor.lastrowid, m) for m in metadata or ()],
                )
        except sqlite3.Error:
            # The name stays served from memory; the heartbeats bring it back after a
            # restart if the file lost it.
            log.exception("name server storage %s: could not write %r", self.path, name)


class ServerCleaner(Pyro5.nameserver.AutoCleaner):
    """Pyro5's autoclean, asking each server once per round instead of once per name.

    The names of one device server share its address; with a thousand devices on twenty
    PCs, Pyro5's cleaner opens a thousand connections a round, this one twenty. A name is
    dropped once its server has not accepted a connection for ``max_unreachable_time``.
    """

    def run(self) -> None:
        """Every NS_AUTOCLEAN seconds, try each server's address; drop names long unreachable."""
        while not self.stop:
            time.sleep(self.loop_delay)
            if time.time() - self.last_cleaned < pyro_config.NS_AUTOCLEAN:
                continue
            by_address: dict[tuple[str, int], list[str]] = {}
            for name, uri in self.nameserver.list().items():
                if name in (Pyro5.core.DAEMON_NAME, Pyro5.core.NAMESERVER_NAME):
                    continue
                try:
                    parsed = Pyro5.core.URI(uri)
                except Pyro5.errors.PyroError:
                    continue
                by_address.setdefault((parsed.host, parsed.port), []).append(name)
            for address, names in by_address.items():
                if self.stop:
                    return
                self._check(address, names)
            self.last_cleaned = time.time()

    def _check(self, address: tuple[str, int], names: list[str]) -> None:
        try:
            sock = Pyro5.socketutil.create_socket(
                connect=address, timeout=pyro_config.COMMTIMEOUT or 5
            )
            sock.close()
        except OSError:
            now = time.time()
            for name in names:
                since = self.unreachable.setdefault(name, now)
                if now - since >= self.max_unreachable_time:
                    log.info(
                        "autoclean: unregistering %s; cannot connect to %s:%s for %d s",
                        name,
                        *address,
                        self.max_unreachable_time,
                    )
                    self.nameserver.remove(name)
                    del self.unreachable[name]
            return
        for name in names:
            self.unreachable.pop(name, None)


class _NameServerDaemon(AdmissionDaemon, AuthDaemon, Pyro5.nameserver.NameServerDaemon):
    """Pyro5's name server daemon with the lab's token protocol and connection limits
    (``pyroinst.daemon.secure``), and autoclean per server (``ServerCleaner``)."""

    def __init__(self, *args: Any, remember: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if remember is not None:
            kept = RememberingStorage(remember)
            for name, value in self.nameserver.storage.items():  # its own registration
                kept[name] = value
            self.nameserver.storage = kept
        pyros = self.cleaner_thread
        if pyros is not None:
            pyros.stop = True  # replaced: it sleeps loop_delay once more, then ends
            self.cleaner_thread = ServerCleaner(self.nameserver)
            self.cleaner_thread.start()


class EmbeddedNameServer:
    """A Pyro5 name server served from a background thread of this process.

    ``port=0`` picks a free port; ``host``/``port`` then tell where it listens. With
    ``autoclean`` (the default) it drops the entries of servers that stopped answering
    (see ``_enable_autoclean``). With a token (argument, token file, or PYROINST_TOKEN)
    it refuses clients without it: they can neither look up, list, register nor remove.
    With ``storage`` (a file path) the names survive a restart (see the module docstring).
    ``accept_plain_token``, ``handshake_timeout``, ``max_connections_per_host``,
    ``max_pending_handshakes`` (or all of
    them, and the token, as ``guarding``, a ``pyroinst.daemon.Guarding``) as for
    InstServer.
    """

    def __init__(
        self,
        host: str = DEFAULT_NS_HOST,
        port: int = DEFAULT_NS_PORT,
        autoclean: bool = True,
        token: str | None = None,
        token_file: str | None = None,
        storage: str | Path | None = None,
        accept_plain_token: bool = False,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_connections_per_host: int = DEFAULT_MAX_CONNECTIONS_PER_HOST,
        guarding: Guarding | None = None,
        max_pending_handshakes: int = DEFAULT_MAX_PENDING_HANDSHAKES,
    ) -> None:
        self._requested = (host, port)
        self.storage = None if storage is None else check_storage(storage)
        self.autoclean = autoclean
        if guarding is None:
            keys = resolve_keys(token, token_file)
            guarding = Guarding(
                own_token(keys),
                accept_plain_token,
                handshake_timeout,
                max_connections_per_host,
                max_pending_handshakes,
                keys,
            )
        require_client_side(guarding.token)
        self.guarding = guarding
        self.token = guarding.token
        self._daemon: Any = None
        self._bcserver: Any = None
        self._thread: threading.Thread | None = None
        self.uri: str | None = None

    @property
    def host(self) -> str:
        """The address the name server listens on."""
        return self._daemon.sock.getsockname()[0] if self._daemon else self._requested[0]

    @property
    def port(self) -> int:
        """The port the name server listens on."""
        return self._daemon.sock.getsockname()[1] if self._daemon else self._requested[1]

    def start(self) -> EmbeddedNameServer:
        """Bind and start serving (OSError if the address is taken)."""
        host, port = self._requested
        if self.autoclean:
            _enable_autoclean()
        try:
            daemon = _NameServerDaemon(host, port, remember=self.storage)
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"name server storage {str(self.storage)!r} cannot be used: {exc}"
            ) from None
        secure(daemon, self.guarding)
        bcserver = None
        hostip = daemon.sock.getsockname()[0]
        # As Pyro5's start_ns: a broadcast responder only off loopback.
        if not (hostip.startswith("127.") or hostip in ("localhost", "::1")):
            internal = daemon.uriFor(daemon.nameserver, nat=False)
            bcserver = Pyro5.nameserver.BroadcastServer(
                internal, ipv6=daemon.sock.family == socket.AF_INET6
            )
            if self.token is None:
                log.warning(
                    "name server on %s without a token: anyone on the network can look up, "
                    "register and remove names. Set PYROINST_TOKEN or --token-file.",
                    hostip,
                )
        uri = daemon.uriFor(daemon.nameserver)
        self._daemon, self._bcserver, self.uri = daemon, bcserver, str(uri)
        if bcserver is not None:
            bcserver.runInThread()
        self._thread = threading.Thread(
            target=daemon.requestLoop, daemon=True, name="pyroinst-nameserver"
        )
        self._thread.start()
        log.info(
            "name server running at %s (broadcast %s)",
            self.uri,
            "on" if bcserver is not None else "off: loopback address",
        )
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._daemon is None:
            return
        self._daemon.shutdown()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._bcserver is not None:
            self._bcserver.close()
        self._daemon.close()
        self._daemon = None
        log.info("name server %s stopped", self.uri)

    def __enter__(self) -> EmbeddedNameServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

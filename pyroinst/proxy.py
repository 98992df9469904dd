"""DeviceProxy: a Pyro5 proxy that finds its device again and bounds every wait.

Before a call, a proxy whose connection is gone reconnects, looking its name up again,
for up to ``reconnect_timeout`` seconds. A call that gets no reply within the proxy's
timeout pings the server once: one that still answers means the call is slow
(``CallTimeout``), one that does not is a frozen or gone PC (``DeviceUnreachable``,
naming its address). A call whose connection breaks after it was sent is never re-sent
(``ConnectionLost``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import Pyro5.client
import Pyro5.core
import Pyro5.errors
from Pyro5.callcontext import current_context

from .errors import (
    AuthenticationFailed,
    CallTimeout,
    ConnectionLost,
    DeviceNotFound,
    DeviceUnreachable,
    MessageRefused,
    NameServerNotFound,
    NotSerializableError,
    ServerBusy,
)
from .exchange import exchange, special
from .handles import LEASE_ANNOTATION, OWNER_ANNOTATION
from .idlecheck import FRESH as _FRESH
from .idlecheck import connection_closed as _connection_closed
from .introspect import RemoteMethod, add_driver_note
from .liveness import check_one
from .naming import lookup, refuse_marshal
from .perthread import MAX_CONNECTIONS, UNSET, Connections, install_descriptors
from .proxyhelp import ProxyHelp
from .pushing import check_window
from .sending import set_timeout as _set_timeout
from .sending import timeout_of as _timeout_of
from .streams import Stream
from .timeouts import CONNECT_TIMEOUT, PING_TIMEOUT, RECONNECT_TIMEOUT
from .tokens import token_problem
from .wire import local as _tls

__all__ = ["DeviceProxy"]

log = logging.getLogger(__name__)
_monotonic = time.monotonic


class DeviceProxy(ProxyHelp, Pyro5.client.Proxy):
    """A Pyro5 proxy that belongs to no thread and finds its device again when the
    device's server restarts.

    Any thread may call it at any time: each thread talks over a connection of its own,
    made on its first call and closed when the thread ends, or by ``with`` /
    ``pyroinst.disconnect()`` (at most ``max_connections``; see ``pyroinst.perthread``).
    A plain Pyro5 ``Proxy`` keeps Pyro5's rule instead: one owning thread.

    Before a call, if the proxy has no connection, or its idle connection was closed by
    the server, it connects again; when the old address does not answer it looks the
    device's name up in the name server again (the server may have come back on another
    port or host), retrying for up to ``reconnect_timeout`` seconds before it raises
    DeviceUnreachable. Only this connecting is retried: a call whose connection breaks
    after the request was sent may or may not have run on the device, so it is never
    re-sent; it raises ConnectionLost, and the next call connects afresh.
    """

    def __init__(
        self,
        uri: Any,
        name: str | None = None,
        ns_host: str | None = None,
        ns_port: int | None = None,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        owner: str | None = None,
        per_thread: bool = True,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        # Before Pyro5's __init__: the connection attributes it sets live in slots.
        self._pyroinst_conns = Connections(per_thread, max_connections)
        super().__init__(uri)
        self._pyroinst_name = name
        self._pyroinst_ns = (ns_host, ns_port)
        self._pyroinst_reconnect = float(reconnect_timeout)
        # Who this client is, for reservations; set by reserve() or given by the caller.
        self._pyroinst_owner = owner
        #: The secret of this proxy's reservation (from reserve()), presented on each call.
        self._pyroinst_lease: str | None = None
        self._pyroinst_peer_max: int | None = None
        # True while a call is a wait the server was asked to make (job_wait, a stream
        # read): no reply in time then means the server stopped answering, without a ping.
        self._pyroinst_waiting = False

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_pyroinst_"):
            object.__setattr__(self, name, value)  # ours, not a remote attribute
        else:
            super().__setattr__(name, value)

    def __setstate__(self, state: Any) -> None:
        # A copy or an unpickled proxy: per-thread connections like any other.
        if "_pyroinst_conns" not in self.__dict__:
            object.__setattr__(self, "_pyroinst_conns", Connections())
            for attr, value in (
                ("_pyroinst_name", None),
                ("_pyroinst_ns", (None, None)),
                ("_pyroinst_reconnect", RECONNECT_TIMEOUT),
                ("_pyroinst_owner", None),
                ("_pyroinst_lease", None),
                ("_pyroinst_peer_max", None),
            ):
                object.__setattr__(self, attr, value)
        super().__setstate__(state)

    def __exit__(self, *exc: object) -> None:
        self._pyroinst_release_all()

    def _pyroinst_release_all(self) -> None:
        """Close the connections of every thread (each connects again on its next call)."""
        self._pyroinst_conns.release_all()

    def _pyroValidateHandshake(self, response: Any) -> None:  # noqa: N802 - Pyro5's name
        # A pyroinst server says how large a message it accepts.
        if isinstance(response, dict) and "max_message_size" in response:
            self._pyroinst_peer_max = int(response["max_message_size"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            if not (name.startswith("__") and name.endswith("__")):
                # Pyro5 never exposes private names: IPython's probes (_repr_latex_,
                # _ipython_display_, ...) are answered here, without a connection.
                raise AttributeError(name)
            return super().__getattr__(name)
        if not self._pyroMethods and not self._pyroAttrs:
            # The first call connects here (it needs the metadata), with the retries,
            # within the call's timeout.
            timeout = self._pyroTimeout
            conns = self._pyroinst_conns
            slot = conns.enter()
            try:
                self._pyroinst_connect(None if timeout is None else time.monotonic() + timeout)
            finally:
                conns.leave(slot)
        if name in self._pyroMethods and name not in self._pyroAttrs:
            return RemoteMethod(self._pyroInvoke, name, self._pyroMaxRetries, self)
        try:
            return super().__getattr__(name)
        except AttributeError:
            raise self._pyroinst_not_offered(name) from None

    def _pyroinst_connect(self, deadline: float | None = None) -> bool:
        """Connect if not connected (True if it did): each attempt within CONNECT_TIMEOUT,
        all of them within ``reconnect_timeout`` and ``deadline`` (a monotonic time)."""
        conn = self._pyroConnection
        if conn is not None:
            # With reads in flight (a stream's, pyroinst.pushing) replies are on their way:
            # not a sign of a closed connection, and under TLS looking would eat them.
            if self.__dict__.get("_pyroinst_in_flight") or not _connection_closed(conn):
                return False
            log.info("connection to %s was closed by the server; reconnecting", self._pyroUri)
            self._pyroRelease()
        refuse_marshal(self._pyroSerializer)
        began = time.monotonic()
        until = began + self._pyroinst_reconnect
        if deadline is not None:
            until = min(until, deadline)
        conns = self._pyroinst_conns
        conns.reserve(until, self._pyroinst_label())
        try:
            return self._pyroinst_connect_within(began, until)
        finally:
            conns.unreserve()  # a no-op once the connection was made

    def _pyroinst_connect_within(self, began: float, until: float) -> bool:
        slot = self._pyroinst_conns.slot()
        delay = 0.05
        while True:
            attempt = max(0.05, min(CONNECT_TIMEOUT, until - time.monotonic()))
            try:
                # This thread's connect waits at most `attempt`; the call's own timeout
                # goes on the connection once it is made.
                saved, slot.timeout = slot.timeout, attempt
                try:
                    self._pyroBind()
                finally:
                    slot.timeout = saved
                return True
            except MessageRefused as exc:
                raise MessageRefused(f"{self._pyroinst_label()}: {exc}") from None
            except AuthenticationFailed as exc:
                raise AuthenticationFailed(
                    f"{self._pyroinst_label()}: {exc}",
                    device=self._pyroinst_name,
                    reason=getattr(exc, "reason", "refused"),
                ) from None
            except Pyro5.errors.CommunicationError as exc:
                if "authentication failed" in str(exc):
                    raise AuthenticationFailed(
                        token_problem(f"the server of {self._pyroinst_label()}", None, str(exc)),
                        device=self._pyroinst_name,
                        reason="refused",
                    ) from None
                if "server busy" in str(exc) or "no free workers" in str(exc):
                    text = str(exc)
                    raise ServerBusy(
                        f"the server of {self._pyroinst_label()} refused the connection: "
                        f"{text[text.find('server busy') :] if 'server busy' in text else text}",
                        device=self._pyroinst_name,
                    ) from None
                error: Exception = exc
                if isinstance(exc, Pyro5.errors.TimeoutError):
                    error = Pyro5.errors.TimeoutError(
                        f"no answer to the connection's handshake within {attempt:.3g} s"
                    )
            if time.monotonic() >= until:
                break
            if self._pyroinst_name is not None:
                try:
                    uri = lookup(self._pyroinst_name, *self._pyroinst_ns)
                    if uri != str(self._pyroUri):
                        log.info("device %r moved to %s", self._pyroinst_name, uri)
                        self._pyroUri = Pyro5.core.URI(uri)
                except (DeviceNotFound, NameServerNotFound) as exc:
                    error = exc
            if time.monotonic() + delay >= until:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise DeviceUnreachable(
            f"the server of {self._pyroinst_label()} stopped answering: it did not answer "
            f"for {time.monotonic() - began:.1f} s ({str(error).rstrip('.')}). Is its PC or "
            "server frozen or stopped? (`pyroinst list` shows which devices answer)",
            device=self._pyroinst_name,
            address=self._pyroinst_address(),
        ) from None

    def _pyroinst_address(self) -> str:
        uri = self._pyroUri
        host = getattr(uri, "host", None)
        return f"{host}:{uri.port}" if host else str(uri)

    def _pyroinst_no_reply(self, methodname: str, waited: float) -> Exception:
        """The error for a call that got no reply within ``waited`` seconds: is the server
        there at all (one short ping)?"""
        where = f"{self._pyroinst_label()}"
        if self._pyroinst_waiting:
            return DeviceUnreachable(
                f"the server of {where} stopped answering: no reply to {methodname}() "
                f"within {waited:.3g} s, the wait it was asked to make and more. Is its PC "
                "or server frozen or stopped?",
                device=self._pyroinst_name,
                address=self._pyroinst_address(),
            )
        alive, reason = check_one(str(self._pyroUri), PING_TIMEOUT)
        if alive:
            return CallTimeout(
                f"{methodname}() of {where} got no reply within {waited:.3g} s, though its "
                "server still answers: the call is still running there, or the device is "
                "slow. Raise the timeout (connect(timeout=), PYROINST_TIMEOUT, --timeout), "
                "or run it as a job. The call was not re-sent.",
                device=self._pyroinst_name,
                address=self._pyroinst_address(),
            )
        return DeviceUnreachable(
            f"the server of {where} stopped answering: no reply to {methodname}() within "
            f"{waited:.3g} s, and none to a ping ({reason}). Is its PC or server frozen or "
            "stopped? The call was not re-sent; it may or may not have run.",
            device=self._pyroinst_name,
            address=self._pyroinst_address(),
        )

    def watch(
        self, channel: str, start: int | str = "latest", max_items: int = 1000, window: int = 2
    ) -> Stream:
        """An iterator of ``(timestamp, value)`` items of the device channel ``channel``.

        ``start="latest"`` begins with the next item published, ``start=0`` with the
        oldest the server keeps. It never ends until ``close()``; it reads over a
        connection of its own, so it can run in another thread; ``window`` reads are kept in
        flight (1 to 8). ``dev.channels()`` lists
        the channels. See ``pyroinst.streams.Stream``.
        """
        check_window(window)
        proxy = DeviceProxy(
            self._pyroUri,
            self._pyroinst_name,
            *self._pyroinst_ns,
            reconnect_timeout=self._pyroinst_reconnect,
            owner=self._pyroinst_owner,
            per_thread=False,  # the stream reads one batch at a time, from any thread
        )
        proxy._pyroinst_lease = self._pyroinst_lease
        label = f"channel {channel!r} of {self._pyroinst_label()}"
        return Stream(
            proxy,
            "channel_read",
            str(channel),
            start,
            label,
            pairs=True,
            max_items=max_items,
            window=window,
        )

    def _pyroinst_label(self) -> str:
        if self._pyroinst_name:
            return f"device {self._pyroinst_name!r} ({self._pyroUri})"
        return str(self._pyroUri)

    def _pyroInvoke(self, methodname, vargs, kwargs, flags=0, objectId=None):  # noqa: N802, N803
        conns = self._pyroinst_conns
        slot = conns.enter()  # (its connection is not taken over by another thread meanwhile)
        try:
            timeout = slot.timeout
            if timeout is UNSET:  # (the slot's own timeout is set only while it connects)
                timeout = self.__dict__.get("_pyroinst_timeout")
            began = _monotonic()
            conn = slot.box.conn
            if (
                objectId is None
                and conn is not None
                and began - slot.used > _FRESH
                and not self.__dict__.get("_pyroinst_in_flight")
                and _connection_closed(conn)
            ):
                # Looked at once: under TLS looking reads (see _tls_closed).
                log.info("connection to %s was closed by the server; reconnecting", self._pyroUri)
                self._pyroRelease()
                conn = None
            if objectId is None and conn is None:
                self._pyroinst_connect(None if timeout is None else began + timeout)
                if timeout is not None:
                    # Connecting took part of this call's time: the rest is what it may wait.
                    _set_timeout(slot.box.conn, max(0.01, began + timeout - _monotonic()))
            elif conn is not None and _timeout_of(conn) != timeout:
                _set_timeout(conn, timeout)  # set by another thread since this one's last call
            owner = self._pyroinst_owner
            if methodname == "reserve" and objectId is None:
                named = vargs[0] if vargs else (kwargs or {}).get("owner", owner)
                owner = None if named is None else str(named)
            annotations = current_context.annotations
            if owner:
                annotations[OWNER_ANNOTATION] = owner.encode("utf-8")
            lease = self._pyroinst_lease
            if lease:
                annotations[LEASE_ANNOTATION] = bytes.fromhex(lease)
            # What fastwire.expect_peer_limit and set_calling_proxy do, without the calls: replies
            # decoded during this call (job handles) learn where this proxy looks devices up
            # and who it is, also when the fast path is not in Pyro5.
            tls = _tls
            tls.peer_max = self._pyroinst_peer_max
            tls.peer_label = self._pyroinst_label
            previous = getattr(tls, "proxy", None)
            tls.proxy = self
            try:
                if slot.box.conn is None or special(self, methodname, vargs):
                    result = super()._pyroInvoke(methodname, vargs, kwargs, flags, objectId)
                else:
                    result = exchange(self, slot, methodname, vargs, kwargs, flags, objectId)
            except Pyro5.errors.TimeoutError:
                # Pyro5 closed the connection: a late reply cannot be mistaken for the next one.
                raise self._pyroinst_no_reply(methodname, time.monotonic() - began) from None
            except Pyro5.errors.SerializeError as exc:
                # The server answered; its answer could not be decoded here. Not "unreachable".
                raise NotSerializableError(
                    f"the reply of {methodname}() from {self._pyroinst_label()} could not be "
                    f"decoded: {exc}",
                    method=methodname,
                    device=self._pyroinst_name,
                ) from None
            except Pyro5.errors.ConnectionClosedError as exc:
                if getattr(exc, "_pyroTraceback", None):
                    add_driver_note(exc)
                    raise
                raise ConnectionLost(
                    f"the connection to {self._pyroinst_label()} broke during {methodname}(): "
                    f"{exc}. The call may or may not have run on the device; it was not "
                    "re-sent. The next call reconnects.",
                    device=self._pyroinst_name,
                ) from None
            except Exception as exc:
                add_driver_note(exc)  # a remote error: where in the driver it was raised
                raise
            finally:
                conn = slot.box.conn
                if conn is not None and _timeout_of(conn) != timeout:
                    _set_timeout(conn, timeout)
                tls.proxy = previous
                tls.peer_max = None
                tls.peer_label = ""
                if owner:
                    annotations.pop(OWNER_ANNOTATION, None)
                if lease:
                    annotations.pop(LEASE_ANNOTATION, None)
            if objectId is None and methodname == "reserve":
                # Later calls present the owner (the server's choice when none was given) and
                # the lease's secret.
                if isinstance(result, dict) and isinstance(result.get("lease"), str):
                    self._pyroinst_owner = str(result.get("owner") or owner)
                    self._pyroinst_lease = result["lease"]
            elif objectId is None and methodname == "release" and result is True:
                self._pyroinst_lease = None
            return result
        finally:
            conns.leave(slot)


install_descriptors(DeviceProxy)

"""Job handles: what a server hands out for a job, and what a client does with one.

Both sides share this module: a device server creates handles and sends them; the
serializers turn them into their wire form and back; a client uses them. On the wire a
handle is the plain dict ``{"__pyroinst__": "JobHandle", "id": ..., "device": ...,
"uri": ...}``, so a client without pyroinst receives it as a dict and calls
``dev.job_result(id)`` itself.

A handle talks to its device through the calling thread's cached proxy (see
``pyroinst.client.cached_proxy``): a thousand handles share one connection per thread.
This module does not import the client: ``pyroinst.client`` hands it what handles use
(``use_client``) when it is imported, as ``import pyroinst`` does; a server never uses a
handle's methods.

Every wait is bounded: ``wait`` and ``result`` ask the server to wait in slices of at most
``WAIT_SLICE`` seconds, and each slice's reply must come within the slice plus ``SLACK``;
a server that stops answering raises DeviceUnreachable (naming its address) within
``timeout`` + ``SLACK`` seconds, and ``timeout=None`` waits for the job, not for a frozen PC.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import JobTimeout
from .pushing import check_window
from .streams import Stream

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

__all__ = ["JobHandle", "OWNER_ANNOTATION", "LEASE_ANNOTATION", "HANDLE_KIND", "WAIT_SLICE"]


class _Client:
    """What job handles use of the client side (given by ``pyroinst.client``)."""

    cached_proxy: Callable[..., Any] | None = None
    default_timeout: Callable[[], float | None] | None = None
    device_proxy: Callable[..., Any] | None = None


_client = _Client()


def use_client(
    cached_proxy: Callable[..., Any],
    default_timeout: Callable[[], float | None],
    device_proxy: Callable[..., Any],
) -> None:
    """How handles reach their devices: the per-thread proxy cache, the default call
    timeout and the proxy class (``pyroinst.client`` calls this when imported)."""
    _client.cached_proxy = cached_proxy
    _client.default_timeout = default_timeout
    _client.device_proxy = device_proxy


def _client_side() -> _Client:
    if _client.cached_proxy is None:
        from .errors import PyroinstError

        raise PyroinstError("job handles reach their devices once pyroinst is imported")
    return _client


#: Request annotation naming the calling client, for reservations (see device.py).
OWNER_ANNOTATION = "PIOW"
#: Request annotation carrying the secret of the caller's reservation (its lease).
LEASE_ANNOTATION = "PILS"
#: The ``__pyroinst__`` marker value of a handle on the wire.
HANDLE_KIND = "JobHandle"
#: Longest single ``job_wait`` call a handle makes; longer waits are made of several.
WAIT_SLICE = 10.0
#: Seconds a reply may take beyond the wait the server was asked to make.
SLACK = 0.5
#: Seconds a handle's repr waits for the job's status before it shows it without.
REPR_TIMEOUT = 2.0


class JobHandle:
    """A job running on a device: ask its status, wait for it, get its result, cancel it.

    Device methods marked as jobs return one at once. It is a small value (id, device
    name, device URI) that can be stored, passed around or rebuilt from its id; any
    number of handles share one connection per thread.
    """

    __slots__ = ("id", "device", "uri", "ns", "owner", "lease")

    def __init__(
        self,
        id: str,  # noqa: A002 - the contract's name
        device: str,
        uri: str,
        ns: tuple[str | None, int | None] | None = None,
        owner: str | None = None,
        lease: str | None = None,
    ) -> None:
        self.id = str(id)
        self.device = str(device)
        self.uri = str(uri)
        # Not sent on the wire: where to look the device up again if its server moves,
        # and the reservation owner (and its lease) of the proxy that started the job.
        self.ns = ns or (None, None)
        self.owner = owner
        self.lease = lease

    def _proxy(self) -> Any:
        client = _client_side()
        assert client.cached_proxy is not None and client.default_timeout is not None
        proxy = client.cached_proxy(self.uri, self.device, self.ns)
        proxy._pyroinst_owner = self.owner
        proxy._pyroinst_lease = self.lease
        timeout = client.default_timeout()
        if proxy._pyroTimeout != timeout:
            proxy._pyroTimeout = timeout
        return proxy

    def _waiting(self, member: str, seconds: float) -> Any:
        """``member(id, seconds)``, a wait on the server whose reply is due within
        ``seconds`` + SLACK (else DeviceUnreachable: the server stopped answering)."""
        proxy = self._proxy()
        timeout = proxy._pyroTimeout
        proxy._pyroTimeout = seconds + SLACK
        proxy._pyroinst_waiting = True
        try:
            return getattr(proxy, member)(self.id, seconds)
        finally:
            proxy._pyroinst_waiting = False
            proxy._pyroTimeout = timeout

    def status(self) -> dict[str, Any]:
        """The job's status dict: id, method, state, progress, message, times, error."""
        return self._proxy().job_status(self.id)

    def done(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.status()["state"] in ("done", "failed", "cancelled")

    def progress(self) -> float:
        """Progress 0..1; exactly 1.0 once the job is done."""
        return float(self.status()["progress"])

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job finishes or ``timeout`` seconds pass; True if it finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if self._waiting("job_wait", max(0.0, min(WAIT_SLICE, remaining))):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def result(self, timeout: float | None = None) -> Any:
        """The job's return value (waiting up to ``timeout``); re-raises the job's error.

        Raises JobTimeout if it has not finished in time, JobCancelled if it was
        cancelled. The result stays on the server: it can be read again.
        """
        # The server waits (in slices, so no call blocks a connection for long): one round
        # trip for a job that finishes within a slice.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            try:
                return self._waiting("job_result", max(0.0, min(WAIT_SLICE, remaining)))
            except JobTimeout as exc:
                if getattr(exc, "job_id", None) != self.id:
                    raise  # the job's own error, not the wait running out
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeout(
                        f"job {self.id} on device '{self.device}' has not finished after "
                        f"{timeout:g} s",
                        job_id=self.id,
                    ) from None

    def cancel(self) -> bool:
        """Cancel the job; False if it had already finished."""
        return self._proxy().job_cancel(self.id)

    def stream(self, start: int | str = 0, max_items: int = 1000, window: int = 2) -> Stream:
        """An iterator over the items the job publishes, live while it runs.

        ``start=0`` begins with the oldest item the server still keeps (a reader joining
        late, or after the job ended, gets the history); ``start="latest"`` with the next
        item published. It ends once the job has ended and every kept item was delivered.
        ``max_items``: the most items one read fetches (a batch is one message).
        ``window``: reads kept in flight (1 to 8; the server sends the next batch while
        this one is used; 1: one request per batch).
        See ``pyroinst.streams.Stream`` (``dropped``, ``close()``, ``with``).
        """
        check_window(window)
        client = _client_side()
        assert client.device_proxy is not None
        proxy = client.device_proxy(
            self.uri, self.device, *self.ns, owner=self.owner, per_thread=False
        )
        proxy._pyroinst_lease = self.lease
        label = f"stream of job {self.id} on '{self.device}'"
        return Stream(
            proxy, "job_stream", self.id, start, label, max_items=max_items, window=window
        )

    # -- asyncio (see pyroinst.aio) ------------------------------------------------------
    def __await__(self) -> Generator[Any, None, Any]:
        """``await job``: the job's result (its error raised), without blocking the loop."""
        from . import aio

        return aio.result(self).__await__()

    async def wait_async(self, timeout: float | None = None) -> bool:
        """``await job.wait_async(timeout)``: True once the job finished, False after
        ``timeout`` seconds. Cancelling the awaiting task does not cancel the job."""
        from . import aio

        return await aio.wait(self, timeout)

    async def result_async(self, timeout: float | None = None) -> Any:
        """``await job.result_async(timeout)``: ``result()`` for asyncio code."""
        from . import aio

        return await aio.result(self, timeout)

    async def cancel_async(self) -> bool:
        """``await job.cancel_async()``: ``cancel()`` for asyncio code."""
        from . import aio

        return await aio.run(self.cancel)

    async def status_async(self) -> dict[str, Any]:
        """``await job.status_async()``: ``status()`` for asyncio code."""
        from . import aio

        return await aio.run(self.status)

    def plot(self, **options: Any) -> Any:
        """A live plot of the job's stream in a notebook (extra ``pyroinst[notebook]``):
        returns at once, updates while the job runs, final when it ends. Lines for 1-D
        items, an image for 2-D ones; see ``pyroinst.notebook``."""
        return self.stream().plot(f"job {self.id} ({self.device})", **options)

    def to_wire(self) -> dict[str, str]:
        """The handle as sent over the network (a plain dict)."""
        return {"__pyroinst__": HANDLE_KIND, "id": self.id, "device": self.device, "uri": self.uri}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and (self.id, self.uri) == (other.id, other.uri)

    def __hash__(self) -> int:
        return hash((self.id, self.uri))

    def __repr__(self) -> str:
        # Shows where the job is (one short status call; without it if none comes).
        proxy = self._proxy()
        timeout = proxy._pyroTimeout
        proxy._pyroTimeout = REPR_TIMEOUT
        try:
            status = proxy.job_status(self.id)
            state = f", state={status['state']!r}, progress={float(status['progress']):.2f}"
        except Exception as exc:  # noqa: BLE001 - a repr never raises
            state = f", state unknown ({type(exc).__name__})"
        finally:
            proxy._pyroTimeout = timeout
        return f"JobHandle(id={self.id!r}, device={self.device!r}{state})"

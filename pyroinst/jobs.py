"""Jobs: long device methods run in the background, one at a time per device.

A job is a method call that a device's worker thread runs while the client gets a handle
at once. Per device, jobs run in submission order; they and the plain (synchronous) calls
take the same per-device lock, so an instrument never holds two conversations at once.
Finished jobs are kept, with their results, until the retention limits of the
``JobStore`` (``retention.py``: count, total result bytes, age) push the oldest out.

Device authors use three names from here: ``@job`` marks a long method, ``@concurrent``
lets a method run without the device lock, and ``current_job()`` gives the running job
(progress, cancellation). Drivers stay usable without any server: the decorators only
mark the function, and outside a job ``current_job()`` returns a stand-in whose
``set_progress`` does nothing and which is never cancelled.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from .buffers import DEFAULT_BYTES, DEFAULT_ITEMS, StreamBuffer, held_nbytes
from .errors import (
    JobCancelled,
    JobTimeout,
    RemoteError,
    builtin_base,
)
from .wireform import sendable


class DeviceLockLike(Protocol):
    """What a job needs of its device's lock (``workers.DeviceLock`` is one)."""

    def acquire(self, holder: str, timeout: float | None = None) -> bool: ...  # noqa: D102

    def release(self) -> None: ...  # noqa: D102


__all__ = [
    "job",
    "concurrent",
    "current_job",
    "Job",
    "QUEUED",
    "RUNNING",
    "DONE",
    "FAILED",
    "CANCELLED",
    "FINISHED_STATES",
]

log = logging.getLogger(__name__)

RUN_ID_LENGTH = 6
JOB_ID_LENGTH = 16

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
FINISHED_STATES = frozenset({DONE, FAILED, CANCELLED})

F = TypeVar("F", bound=Callable[..., Any])


def job(func: F) -> F:
    """Mark a device method as a job: a remote call returns a JobHandle at once.

    The function itself is returned unchanged, so the driver works the same without a
    server (a local call simply runs it).
    """
    func._pyroinst_job = True  # type: ignore[attr-defined]
    return func


def concurrent(func: F) -> F:
    """Mark a device method as safe to run without the device lock.

    Use it for methods that do not talk to the hardware (cached values, configuration
    read-outs): they answer even while a job runs. A job marked concurrent runs at once
    in its own thread, outside the device's queue and lock.
    """
    func._pyroinst_concurrent = True  # type: ignore[attr-defined]
    return func


def is_job(func: Any) -> bool:
    """True when ``func`` was marked with ``@job``."""
    return bool(getattr(func, "_pyroinst_job", False))


def is_concurrent(func: Any) -> bool:
    """True when ``func`` was marked with ``@concurrent``."""
    return bool(getattr(func, "_pyroinst_concurrent", False))


class _NoJob:
    """What ``current_job()`` returns outside a job: progress goes nowhere, never cancelled."""

    id = None
    cancelled = False

    def set_progress(self, fraction: float, message: str | None = None) -> None:
        """Do nothing: there is no job to report to."""

    def check_cancelled(self) -> None:
        """Do nothing: outside a job nothing can be cancelled."""

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``."""
        time.sleep(seconds)

    def publish(self, value: Any) -> None:
        """Do nothing: there is no job whose stream could take ``value``."""


_NO_JOB = _NoJob()


_local = threading.local()


def current_job() -> Job | _NoJob:
    """The job the calling thread is running, or a no-op stand-in outside a job."""
    return getattr(_local, "job", None) or _NO_JOB


def transportable(exc: BaseException) -> BaseException:
    """``exc`` itself if a client can rebuild its type, else a RemoteError describing it.

    Built-in, pyroinst and Pyro5 exceptions travel with their own type; a driver's own
    class would reach the client as Pyro5's SerializeError, so it becomes RemoteError
    carrying the remote type name, message and traceback.
    """
    etype = type(exc)
    module = etype.__module__
    if module == "builtins" or module == "pyroinst.errors" or module.startswith("Pyro5."):
        return exc
    remote_type = f"{module}.{etype.__qualname__}"
    tb = "".join(traceback.format_exception(etype, exc, exc.__traceback__))
    err = RemoteError(
        f"{remote_type}: {exc}",
        remote_type=remote_type,
        remote_message=str(exc),
        remote_traceback=tb,
        remote_builtin_base=builtin_base(etype),
        remote_attributes={
            k: v
            for k, v in vars(exc).items()
            if not k.startswith("_") and isinstance(v, str | int | float | bool | None)
        },
    )
    err.__cause__ = exc
    return err


class Job:
    """One background call of a device method, with its state, progress and outcome.

    Inside the running method, ``pyroinst.current_job()`` returns this object: call
    ``set_progress(fraction, message)`` to report, read ``cancelled`` or call
    ``check_cancelled()`` (raises JobCancelled) to honour a cancel, and use
    ``sleep(seconds)`` for waits that a cancel interrupts.
    """

    def __init__(
        self,
        device: str,
        method: str,
        func: Callable[..., Any],
        args: tuple = (),
        kwargs: dict | None = None,
        concurrent: bool = False,
        job_id: str | None = None,
        stream_items: int = DEFAULT_ITEMS,
        stream_bytes: int = DEFAULT_BYTES,
        owner: str | None = None,
        lease: bytes | None = None,
    ) -> None:
        self.id = job_id or uuid.uuid4().hex[:16]
        #: The owner name the client that started the job presented (reservations), and
        #: the secret of its reservation's lease, if it presented one.
        self.owner = owner
        self.lease = lease
        self._stream_bounds = (stream_items, stream_bytes)
        self._stream: StreamBuffer | None = None
        self._stream_lock = threading.Lock()
        self._stream_ended = False
        self.device = device
        self.method = method
        self.func = func
        self.args = args
        self.kwargs = kwargs or {}
        # Kept as text: the arguments themselves are dropped once the job has run.
        self.args_text = self.call_text()
        self.concurrent = concurrent
        self.state = QUEUED
        self.progress = 0.0
        self.message: str | None = None
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.error: str | None = None
        self.traceback: str | None = None
        #: Memory the result keeps alive, and the stream's items (kept with the job).
        self.result_bytes = 0
        self.stream_bytes = 0
        self._result: Any = None
        self._exception: BaseException | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()

    # -- what the running method uses ------------------------------------------------
    def set_progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress as a fraction 0..1 (clipped) and an optional message."""
        self.progress = min(1.0, max(0.0, float(fraction)))
        if message is not None:
            self.message = str(message)

    @property
    def cancelled(self) -> bool:
        """True once a cancel was requested."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise JobCancelled if a cancel was requested; call it often in long loops."""
        if self._cancel.is_set():
            raise JobCancelled(f"job {self.id} ({self.method}) was cancelled", job_id=self.id)

    def publish(self, value: Any) -> None:
        """Append ``value`` to the job's stream, for readers to see while the job runs.

        Any value a result may be (arrays, numbers, dicts of arrays...). It never blocks
        and never waits for readers; arrays are kept as they are, not copied, so publish
        data you no longer write. A value that cannot be sent raises NotSerializableError
        here, at once, and the stream is left as it was.
        """
        item = sendable(value, lambda: f"job {self.id} ({self.method}) published")
        (self._stream or self.stream).publish(item)

    @property
    def stream(self) -> StreamBuffer:
        """The job's stream of published items (made on first use)."""
        stream = self._stream
        if stream is None:
            with self._stream_lock:
                if self._stream is None:
                    self._stream = StreamBuffer(*self._stream_bounds)
                    if self._stream_ended:
                        self._stream.close()  # asked for after the job ended: empty, done
                stream = self._stream
        return stream

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, raising JobCancelled at once if the job is cancelled meanwhile."""
        if self._cancel.wait(max(0.0, seconds)):
            self.check_cancelled()

    # -- what the server uses -----------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self._done.is_set()

    def request_cancel(self) -> bool:
        """Ask the job to stop; True if it had not finished yet."""
        if self._done.is_set():
            return False
        self._cancel.set()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished or ``timeout`` seconds pass; True if finished."""
        return self._done.wait(timeout)

    def status(self) -> dict[str, Any]:
        """The job's state as a plain dict (what ``job_status`` returns)."""
        return {
            "id": self.id,
            "device": self.device,
            "method": self.method,
            "state": self.state,
            "progress": self.progress,
            "message": self.message,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "args": self.args_text,
        }

    def call_text(self, limit: int = 120) -> str:
        """The job's arguments as a short text (``2000, mode='fast'``; arrays by shape)."""
        parts = [_short(a) for a in self.args]
        parts += [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        text = ", ".join(parts)
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def outcome(self, timeout: float | None = None) -> Any:
        """The result; re-raises the method's exception, or JobCancelled / JobTimeout."""
        if not self._done.wait(timeout):
            raise JobTimeout(
                f"job {self.id} ({self.method}) on device '{self.device}' is still "
                f"{self.state} after {timeout:g} s",
                job_id=self.id,
            )
        if self.state == CANCELLED and self._exception is not None:
            raise copy.copy(self._exception)  # cancelled for a reason (DeviceReserved)
        if self.state == CANCELLED:
            raise JobCancelled(
                f"job {self.id} ({self.method}) on device '{self.device}' was cancelled",
                job_id=self.id,
            )
        if self.state == FAILED:
            assert self._exception is not None
            # A copy per fetch: raising marks the exception (Pyro5 sets its traceback), and
            # several clients may fetch at once.
            raise copy.copy(self._exception)
        return self._result

    def run(self, lock: DeviceLockLike | None) -> None:
        """Execute the job in the calling thread (the device worker), holding ``lock``."""
        if self._cancel.is_set():
            self._finish(CANCELLED)
            return
        if lock is not None:
            holder = f"job {self.id} ({self.method})"
            # A long plain call may hold the lock; keep honouring a cancel while waiting.
            while not lock.acquire(holder, timeout=0.1):
                if self._cancel.is_set():
                    self._finish(CANCELLED)
                    return
        try:
            self.state = RUNNING
            self.started = time.time()
            _local.job = self
            try:
                result = self.func(*self.args, **self.kwargs)
            except JobCancelled:
                self._finish(CANCELLED)
            except BaseException as exc:  # noqa: BLE001 - a job records every failure
                self._fail(exc)
            else:
                self._result = result
                self.result_bytes = held_nbytes(result)
                self._finish(DONE)
        finally:
            _local.job = None
            if lock is not None:
                lock.release()

    def _fail(self, exc: BaseException) -> None:
        self.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning("job %s (%s.%s) failed: %s", self.id, self.device, self.method, self.error)
        sendable = transportable(exc)
        # The traceback's frames would keep the job's locals (arrays) alive for as long
        # as the job is kept; its text is all anyone reads later.
        if sendable is not exc:
            sendable.__cause__ = None
        # Pyro5 puts the traceback of the call that raises it (job_result) on the exception
        # it sends; the serializers put this one, the job's own, back (see serialization).
        sendable._pyroinst_traceback = [self.traceback]  # type: ignore[attr-defined]
        sendable.__traceback__ = None
        self._exception = sendable
        self._finish(FAILED)

    @property
    def held_bytes(self) -> int:
        """Memory the finished job keeps: its result and its stream's items."""
        return self.result_bytes + self.stream_bytes

    def refuse(self, exc: BaseException, state: str = CANCELLED) -> None:
        """End a job that has not started: ``exc`` is what its result raises (a job
        cancelled by a reservation, one whose thread could not start)."""
        self.error = f"{type(exc).__name__}: {exc}"
        self._exception = transportable(exc)
        self._finish(state)

    def _finish(self, state: str) -> None:
        self.state = state
        self.finished = time.time()
        if state == DONE:
            self.progress = 1.0
        # The stream stays with the job (its bytes count as the job's) and ends here.
        with self._stream_lock:
            self._stream_ended = True
            stream = self._stream
        if stream is not None:
            stream.close()
            self.stream_bytes = stream.nbytes
        self.func = None  # type: ignore[assignment]
        self.args = ()
        self.kwargs = {}
        self._done.set()


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and getattr(value, "dtype", None) is not None and len(shape):
        return f"<{value.dtype} array {'x'.join(str(n) for n in shape)}>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

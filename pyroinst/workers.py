"""The per-device lock and worker: one conversation with an instrument at a time.

``DeviceLock`` is taken by every plain call and every job of a device; ``DeviceWorker``
runs a device's jobs one at a time in the order they were submitted (``@concurrent``
jobs in threads of their own, without the lock). Both are bounded: at most
``max_queued_jobs`` jobs wait (or run concurrently) per device, and a job whose thread
cannot start fails with a clear error while the device goes on serving.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import DeviceBusy, PyroinstError
from .jobs import CANCELLED, FAILED, QUEUED, Job

if TYPE_CHECKING:
    from .retention import JobStore

__all__ = ["DEFAULT_MAX_QUEUED_JOBS", "DeviceLock", "DeviceWorker"]

log = logging.getLogger(__name__)

#: Jobs one device may have waiting (plus concurrent ones running) by default.
DEFAULT_MAX_QUEUED_JOBS = 1000


class DeviceLock:
    """The per-device lock shared by jobs and plain calls; knows who holds it."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._lock = threading.Lock()
        self.holder: str | None = None
        self.since = 0.0
        #: Callers waiting for the lock now.
        self.waiting = 0
        self._count = threading.Lock()

    def acquire(self, holder: str, timeout: float | None = None) -> bool:
        """Take the lock for ``holder`` (a job id or method name); False if not free in time."""
        lock = self._lock
        # Uncontended, the non-blocking try is the whole cost of a plain call's locking.
        if not lock.acquire(False):
            with self._count:
                self.waiting += 1
            try:
                got = lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
            finally:
                with self._count:
                    self.waiting -= 1
            if not got:
                return False
        self.holder = holder
        self.since = time.monotonic()
        return True

    def describe_holder(self) -> str:
        """Who holds the lock, for messages."""
        holder = self.holder
        if holder is None:
            return "another call"
        return (
            holder
            if holder.startswith(("job ", "property ", "shutdown", "monitor "))
            else f"call {holder}()"
        )

    def release(self) -> None:
        """Give the lock back."""
        self.holder = None
        self._lock.release()

    def busy_error(self, caller: str, timeout: float) -> DeviceBusy:
        """The DeviceBusy to raise for ``caller`` after waiting ``timeout`` seconds."""
        holder = self.describe_holder()
        held = time.monotonic() - self.since if self.holder else 0.0
        return DeviceBusy(
            f"device '{self.device}' is busy with {holder} (running for {held:.1f} s); "
            f"{caller} waited {timeout:g} s (lock_timeout). Start it as a job "
            f"(it will queue), wait for the job, or raise lock_timeout.",
            device=self.device,
            holder=holder,
        )


class DeviceWorker:
    """Runs one device's jobs one at a time, in the order they were submitted.

    ``max_queued``: jobs that may wait (or run as @concurrent jobs) at once; more raise
    DeviceBusy naming ``max_queued_jobs``. ``admit``: called with each job just before it
    runs; an exception it returns ends the job unstarted with that exception (how a
    reservation keeps others' jobs off the device).
    """

    def __init__(
        self,
        device: str,
        lock: DeviceLock,
        store: JobStore,
        max_queued: int = DEFAULT_MAX_QUEUED_JOBS,
        admit: Callable[[Job], BaseException | None] | None = None,
    ) -> None:
        self.device = device
        self.lock = lock
        self.store = store
        self.max_queued = int(max_queued)
        self.admit = admit
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._extra: set[threading.Thread] = set()
        self._current: Job | None = None

    def submit(self, job: Job) -> None:
        """Queue ``job`` (or, for a concurrent job, start it at once in its own thread).

        DeviceBusy (nothing queued) when ``max_queued`` jobs wait already. A job whose
        thread cannot start is failed with an error saying so; the device stays usable.
        """
        if self._stopping:
            raise PyroinstError(f"device '{self.device}' is shutting down; no new jobs")
        with self._cond:
            waiting = len(self._queue) + len(self._extra)
            if waiting >= self.max_queued:
                raise DeviceBusy(
                    f"device '{self.device}' has {waiting} jobs waiting or running, the most "
                    f"its max_queued_jobs ({self.max_queued}) allows: job_start({job.method!r}) "
                    "is refused and nothing queued is lost. Wait for jobs to finish, cancel "
                    "some, or raise max_queued_jobs ([server] or [devices.NAME] in the lab "
                    "file, InstServer(max_queued_jobs=), serve --max-queued-jobs).",
                    device=self.device,
                    holder=self.lock.describe_holder(),
                )
            self.store.add(job)
            if job.concurrent:
                thread = threading.Thread(
                    target=self._run_one,
                    args=(job, None),
                    daemon=True,
                    name=f"pyroinst-job-{self.device}-{job.id}",
                )
                self._extra.add(thread)
                if not self._start(thread, job):
                    self._extra.discard(thread)
                return
            self._queue.append(job)
            if self._thread is None:
                thread = threading.Thread(
                    target=self._loop, daemon=True, name=f"pyroinst-worker-{self.device}"
                )
                if self._start(thread, job):
                    self._thread = thread
                else:
                    self._queue.remove(job)
                    return
            self._cond.notify()

    def _start(self, thread: threading.Thread, job: Job) -> bool:
        """Start ``thread``; if no thread can start, fail ``job`` saying so (False)."""
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": out of threads or memory
            log.error("device '%s': no thread for job %s: %s", self.device, job.id, exc)
            job.refuse(
                PyroinstError(
                    f"job {job.id} ({job.method}) on device '{self.device}' could not start: "
                    f"the server could not start a thread for it ({exc}); it is out of "
                    "threads or memory. The device still serves: try again later."
                ),
                FAILED,
            )
            self.store.finished(job)
            return False
        return True

    def cancel(self, job: Job) -> bool:
        """Cancel ``job``: a queued one never runs, a running one is asked to stop."""
        if not job.request_cancel():
            return False
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                job._finish(CANCELLED)
                self.store.finished(job)
        return True

    def refuse_queued(
        self, keep: Callable[[Job], bool], exc: Callable[[Job], BaseException]
    ) -> int:
        """End every queued job for which ``keep`` is false, with ``exc(job)`` as its
        outcome (state cancelled); returns how many."""
        with self._cond:
            refused = [job for job in self._queue if not keep(job)]
            for job in refused:
                self._queue.remove(job)
        for job in refused:
            job.request_cancel()
            job.refuse(exc(job))
            self.store.finished(job)
        return len(refused)

    def _run_one(self, job: Job, lock: DeviceLock | None) -> None:
        try:
            job.run(lock)
        finally:
            self.store.finished(job)
            with self._cond:
                self._extra.discard(threading.current_thread())

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                job = self._current = self._queue.popleft()
            try:
                refusal = self.admit(job) if self.admit is not None else None
                if refusal is not None:
                    job.refuse(refusal)
                else:
                    job.run(self.lock)
                self.store.finished(job)
            finally:
                # Waiting for the next job must not keep this one (and its result) alive.
                self._current = job = None  # type: ignore[assignment]

    def waiting_for(self, job: Job) -> str | None:
        """What a queued ``job`` waits for, in words (None if it is not waiting)."""
        if job.state != QUEUED or job.done:
            return None
        with self._cond:
            queue = list(self._queue)
            current = self._current
        if job is current or job.concurrent:
            return f"the device, busy with {self.lock.describe_holder()}"
        if job not in queue:
            return None
        ahead = queue.index(job)
        running = f"job {current.id} ({current.method})" if current is not None else "starting"
        if ahead:
            return f"{ahead} queued job{'s' if ahead > 1 else ''} ahead, then {running}"
        return running

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel queued and running jobs and wait for the worker; True if it ended in time."""
        with self._cond:
            self._stopping = True
            pending = list(self._queue)
        for job in pending:
            self.cancel(job)
        for job in self.store.jobs_of(self.device):
            job.request_cancel()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        ok = True
        for thread in [self._thread, *list(self._extra)]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
                ok = ok and not thread.is_alive()
        return ok

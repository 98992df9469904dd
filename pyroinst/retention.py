"""Retention: every job of a server by id, and how long finished ones are kept.

Finished jobs stay, with their results (and their streams), until one of the limits
pushes the oldest out: a count, a total of result bytes, an age. An evicted id is
remembered, so asking for it says "expired" rather than "unknown"; an id from an earlier
run of the server (ids start with the run's id) says the server restarted.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid

from .errors import JobNotFound
from .jobs import JOB_ID_LENGTH, RUN_ID_LENGTH, Job

__all__ = ["JobStore"]

log = logging.getLogger(__name__)


class JobStore:
    """Every job of a server by id; finished ones kept until the retention limits evict them.

    Limits: ``max_jobs`` finished jobs, ``max_result_bytes`` of results in total,
    ``max_age`` seconds since a job finished. Queued and running jobs are never evicted.
    An evicted id is remembered (up to 100,000) so that asking for it says "expired".
    """

    def __init__(
        self,
        max_jobs: int = 1000,
        max_result_bytes: int = 1 << 30,
        max_age: float = 24 * 3600.0,
    ) -> None:
        # Job ids start with this run's id, so an id from before a restart is recognised.
        self.run_id = uuid.uuid4().hex[:RUN_ID_LENGTH]
        self.started = time.time()
        self.max_jobs = int(max_jobs)
        self.max_result_bytes = int(max_result_bytes)
        self.max_age = float(max_age)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._finished: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._finished_bytes = 0
        self._expired: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._oversized_warned: str | None = None

    def new_id(self) -> str:
        """A fresh job id: this run's id, then random hex."""
        return self.run_id + uuid.uuid4().hex[: JOB_ID_LENGTH - RUN_ID_LENGTH]

    def add(self, job: Job) -> None:
        """Keep ``job`` (queued) under its id."""
        with self._lock:
            self._jobs[job.id] = job
            self._evict_locked()

    def finished(self, job: Job) -> None:
        """Note that ``job`` finished; may evict older finished jobs."""
        with self._lock:
            if job.id in self._jobs and job.id not in self._finished:
                self._finished[job.id] = job
                self._finished_bytes += job.held_bytes
            self._evict_locked()

    def get(self, job_id: str, device: str) -> Job:
        """The job ``job_id`` of ``device``; JobNotFound saying why if there is none."""
        with self._lock:
            self._evict_locked()
            job = self._jobs.get(str(job_id))
            if job is not None and job.device == device:
                return job
            reason = self._expired.get(str(job_id))
        text = str(job_id)
        if reason is None and len(text) == JOB_ID_LENGTH and not text.startswith(self.run_id):
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
            raise JobNotFound(
                f"job {job_id} of device '{device}' was started by an earlier run of its "
                f"server; the server restarted (at {started}) and the job's state and "
                "result were lost",
                job_id=job_id,
            )
        if reason is not None:
            raise JobNotFound(
                f"job {job_id} of device '{device}' expired: {reason}. Fetch results "
                "sooner or raise the server's retention limits.",
                job_id=job_id,
            )
        raise JobNotFound(
            f"no job {job_id!r} on device '{device}': the id is unknown here (mistyped, "
            "from another device, or from before the server restarted)",
            job_id=job_id,
        )

    def _warn_oversized(self, job: Job) -> None:
        if self._oversized_warned == job.id:
            return
        self._oversized_warned = job.id
        log.warning(
            "job %s (%s.%s) keeps %d bytes (its result %d, the items its stream still holds "
            "%d), more than max_result_bytes (%d): it is kept alone, and goes when a newer "
            "job finishes or after max_job_age (%g s). Raise max_result_bytes to keep more.",
            job.id,
            job.device,
            job.method,
            job.held_bytes,
            job.result_bytes,
            job.stream_bytes,
            self.max_result_bytes,
            self.max_age,
        )

    def jobs_of(self, device: str) -> list[Job]:
        """The jobs of ``device`` that are still kept, newest first."""
        with self._lock:
            self._evict_locked()
            jobs = [j for j in self._jobs.values() if j.device == device]
        return sorted(jobs, key=lambda j: j.created, reverse=True)

    def all_jobs(self) -> list[Job]:
        """Every job still kept."""
        with self._lock:
            return list(self._jobs.values())

    def _evict_locked(self) -> None:
        now = time.time()
        while self._finished:
            job_id, job = next(iter(self._finished.items()))
            # The newest finished job never goes for the byte budget: a result larger than
            # the whole budget stays (alone) until a newer result or its age pushes it out.
            newest = len(self._finished) == 1
            if len(self._finished) > self.max_jobs:
                reason = f"only the last {self.max_jobs} finished jobs are kept"
            elif self._finished_bytes > self.max_result_bytes and not newest:
                reason = f"finished results are kept up to {self.max_result_bytes} bytes in all"
            elif job.finished is not None and now - job.finished > self.max_age:
                reason = f"finished jobs are kept for {self.max_age:g} s"
            else:
                if newest and self._finished_bytes > self.max_result_bytes:
                    self._warn_oversized(job)
                break
            del self._finished[job_id]
            del self._jobs[job_id]
            self._finished_bytes -= job.held_bytes
            self._expired[job_id] = reason
            if len(self._expired) > 100_000:
                self._expired.popitem(last=False)
            log.debug("job %s evicted: %s", job_id, reason)

"""The device of the live-data rows (W7-W10): jobs that publish, on a pyroinst server."""

from __future__ import annotations

import time

import numpy as np

import pyroinst


class StreamDevice:
    """Publishes frames, small items and time stamps from jobs."""

    @pyroinst.job
    def frames(self, count: int, points: int, pause: float = 0.0, pool: int = 16) -> float:
        """Publish ``count`` frames of ``points`` float64, ``pause`` seconds apart; returns
        the job's own wall time. The frames come from a ``pool`` made beforehand (a
        camera's acquisition buffers, never written again while published), so what is
        timed is publishing and reading, not numpy filling fresh memory; ``pool=0``: a
        fresh frame each, holding its own number."""
        job = pyroinst.current_job()
        made = [np.full(points, float(i)) for i in range(pool)]
        start = time.perf_counter()
        for i in range(count):
            job.publish(made[i % pool] if pool else np.full(points, float(i)))
            if pause:
                time.sleep(pause)
        return time.perf_counter() - start

    @pyroinst.job
    def points(self, count: int) -> float:
        """Publish ``count`` small items (a dict of two floats); returns the wall time."""
        job = pyroinst.current_job()
        start = time.perf_counter()
        for i in range(count):
            job.publish({"x": float(i), "y": 0.5 * i})
        return time.perf_counter() - start

    @pyroinst.job
    def stamps(self, count: int, interval: float) -> int:
        """Publish ``count`` monotonic time stamps, ``interval`` seconds apart."""
        job = pyroinst.current_job()
        for _ in range(count):
            time.sleep(interval)
            job.publish(time.monotonic())
        return count

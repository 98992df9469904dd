"""Finished jobs: what retention keeps, and the error a failed job's result raises."""

from __future__ import annotations

import logging
import threading

import pytest

import pyroinst
from tests.helpers import Echo


def test_result_larger_than_the_budget_is_kept_alone(ns, make_server, caplog):
    make_server({"echo": Echo(), "other": Echo()}, max_result_bytes=4000)
    echo = pyroinst.connect("echo", ns.host, ns.port)
    other = pyroinst.connect("other", ns.host, ns.port)
    small = other.big(10)  # 80 bytes
    assert small.result(timeout=10).shape == (10,)
    with caplog.at_level(logging.WARNING, logger="pyroinst.jobs"):
        big = echo.big(1000)  # 8,000 bytes: twice the whole budget
        assert big.wait(timeout=10)
        assert big.result().shape == (1000,)  # finished, and still there
        assert big.result().shape == (1000,)  # ...again
    warnings = [r.getMessage() for r in caplog.records if "max_result_bytes" in r.getMessage()]
    assert len(warnings) == 1 and big.id in warnings[0]
    with pytest.raises(pyroinst.JobNotFound, match="expired"):
        small.result()  # the older one made room
    newer = other.big(10)
    assert newer.result(timeout=10).shape == (10,)
    with pytest.raises(pyroinst.JobNotFound, match="expired"):
        big.result()  # a newer result pushed the oversized one out
    echo._pyroRelease()
    other._pyroRelease()


@pytest.mark.parametrize("serializer", ["serpent", "msgpack", "json"])
def test_failed_job_carries_its_own_traceback(ns, make_server, serializer):
    make_server({"echo": Echo()})
    dev = pyroinst.connect("echo", ns.host, ns.port)
    dev._pyroSerializer = serializer
    job = dev.failing_builtin_job("bad value")
    assert job.wait(timeout=10)
    errors = []

    def fetch() -> None:
        try:
            job.result()
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    fetch()
    assert len(errors) == 7
    for exc in errors:
        remote = "".join(exc._pyroTraceback)
        assert "failing_builtin_job" in remote and "bad value" in remote, remote
        assert "outcome" not in remote and "job_result" not in remote, remote
    dev._pyroRelease()

"""Small things the web server got wrong: 0-d arrays as .npy, arrays inside items
summarised, 413 for a streamed body, ::1 as loopback, wrong tokens slowed per address."""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest

import pyroinst
from pyroinst.web.access import check_bind
from tests.helpers import web_lab

TOKEN = "values-token-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


class Frames:
    """Publishes a frame inside a dict, and a 0-d array; returns a 0-d array."""

    @pyroinst.job
    def run(self) -> np.ndarray:
        """The job."""
        job = pyroinst.current_job()
        job.publish({"frame": np.ones((256, 256)), "n": 1})
        job.publish(np.array(1.5))
        return np.array(2.5)


@pytest.fixture(scope="module")
def lab():
    with web_lab(TOKEN, {"frames": Frames()}) as (_, _, web):
        with httpx.Client(base_url=web.url.rstrip("/"), headers=HEADERS, timeout=30) as client:
            yield client


def test_zero_d_arrays_stay_zero_d(lab):
    job = lab.post("/api/devices/frames/run").json()
    status = lab.get(f"/api/devices/frames/jobs/{job['id']}")
    deadline = time.monotonic() + 20
    while status.json()["state"] != "done" and time.monotonic() < deadline:
        status = lab.get(f"/api/devices/frames/jobs/{job['id']}")
    result = lab.get(f"/api/devices/frames/jobs/{job['id']}/result", params={"format": "npy"})
    loaded = np.load(io.BytesIO(result.content))
    assert loaded.shape == () and loaded == 2.5
    item = lab.get(f"/api/devices/frames/jobs/{job['id']}/items/1", params={"format": "npy"})
    assert np.load(io.BytesIO(item.content)).shape == ()


def test_arrays_inside_items_are_summarised(lab):
    job = lab.post("/api/devices/frames/run").json()
    with lab.stream("GET", f"/api/devices/frames/jobs/{job['id']}/events") as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data:") and '"index":0' in line:
                item = json.loads(line[5:])
                break
    assert len(line) < 1000, len(line)  # not the 512 KiB frame
    assert item["value"]["frame"]["shape"] == [256, 256] and item["value"]["n"] == 1


def test_a_streamed_body_over_the_limit_is_413(lab):
    def chunks():
        for _ in range(40):
            yield b" " * 65536

    answer = lab.post("/api/devices/frames/run", content=chunks())
    assert answer.status_code == 413 and answer.json()["error"] == "PayloadTooLarge"
    assert lab.get("/api/devices").status_code == 200


def test_ipv6_loopback_is_loopback():
    check_bind("::1", None)
    check_bind("[::1]", None)
    with pytest.raises(pyroinst.ConfigurationError):
        check_bind("0.0.0.0", None)


def test_wrong_tokens_are_answered_ever_later(lab):
    base = str(lab.base_url)
    took = []
    for _ in range(6):
        started = time.monotonic()
        answer = httpx.get(base + "/api/devices", headers={"Authorization": "Bearer wrong"})
        took.append(time.monotonic() - started)
        assert answer.status_code == 401
    assert took[-1] >= 0.2, took  # past the free failures, each refusal waits longer
    assert lab.get("/api/devices").status_code == 200  # the right token is not slowed

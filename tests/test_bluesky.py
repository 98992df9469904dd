"""A real bluesky RunEngine runs plans against served devices: a motor and a detector
from jobs, stop mid-scan cancels the move, a failing job fails the run."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import pyroinst
from tests.helpers import wait_until

bluesky = pytest.importorskip("bluesky")
pytest.importorskip("ophyd")
from bluesky import RunEngine  # noqa: E402
from bluesky.plans import count, scan  # noqa: E402

from pyroinst.contrib.ophyd import (  # noqa: E402
    JobStatus,
    RemoteDetector,
    RemotePositioner,
    RemoteSignal,
)


class Stage:
    """A motor: moves at ``speed`` units per second; refuses positions above 100."""

    def __init__(self) -> None:
        self.position = 0.0
        self.speed = 1000.0
        self.moves: list[tuple[float, str]] = []

    @pyroinst.job
    def move_to(self, target: float) -> float:
        """Move to ``target`` (a job: progress as it goes, stops when cancelled)."""
        if target > 100:
            raise ValueError(f"position {target} is beyond the end switch at 100")
        ctx = pyroinst.current_job()
        start = self.position
        steps = max(1, int(abs(target - start) / self.speed / 0.01))
        try:
            for i in range(1, steps + 1):
                ctx.check_cancelled()
                self.position = start + (target - start) * i / steps
                ctx.set_progress(i / steps)
                ctx.sleep(0.01)
        except pyroinst.JobCancelled:
            self.moves.append((self.position, "cancelled"))
            raise
        self.moves.append((self.position, "done"))
        return self.position


class Camera:
    """A detector reading twice the stage's position."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.gain = 1.0

    @pyroinst.job
    def acquire(self) -> float:
        """One reading (a job)."""
        return 2 * self.stage.position * self.gain


@pytest.fixture(scope="module")
def lab():
    ns = pyroinst.EmbeddedNameServer("127.0.0.1", 0).start()
    stage = Stage()
    server = pyroinst.InstServer(host="127.0.0.1", port=0, ns_host=ns.host, ns_port=ns.port)
    server.add_device(stage, "stage", attributes=["position"])
    server.add_device(Camera(stage), "camera", attributes=["gain"])
    server.start()
    yield ns, stage
    server.stop()
    ns.stop()


@pytest.fixture
def devices(lab):
    ns, stage = lab
    stage.speed = 1000.0
    motor_proxy = pyroinst.connect("stage", ns.host, ns.port)
    camera_proxy = pyroinst.connect("camera", ns.host, ns.port)
    motor = RemotePositioner(motor_proxy, name="motor")
    det = RemoteDetector(camera_proxy, name="det")
    yield motor, det, camera_proxy, stage
    pyroinst.disconnect(motor_proxy)
    pyroinst.disconnect(camera_proxy)


def run_engine():
    engine = RunEngine({}, call_returns_result=False)
    docs: dict[str, list] = {}
    engine.subscribe(lambda name, doc: docs.setdefault(name, []).append(doc))
    return engine, docs


def test_scan_and_count(devices):
    motor, det, _, _ = devices
    engine, docs = run_engine()
    engine(scan([det], motor, 0, 2, 11))
    events = docs["event"]
    assert len(events) == 11
    xs = [e["data"]["motor"] for e in events]
    ys = [e["data"]["det"] for e in events]
    assert np.allclose(xs, np.linspace(0, 2, 11)) and np.allclose(ys, 2 * np.asarray(xs))
    assert docs["stop"][0]["exit_status"] == "success"
    engine, docs = run_engine()
    engine(count([det], 3))
    assert len(docs["event"]) == 3
    assert all(e["data"]["det"] == pytest.approx(4.0) for e in docs["event"])


def test_a_signal_and_a_status_with_progress(devices):
    motor, _, camera_proxy, _ = devices
    gain = RemoteSignal(camera_proxy, "gain", name="gain")
    gain.put(1.5)
    assert gain.get() == 1.5
    gain.set(1.0).wait(10)
    assert gain.get() == 1.0
    seen = []
    devices[3].speed = 6.0  # half a second: progress is seen on the way
    status = motor.set(3.0)
    assert isinstance(status, JobStatus)
    status.watch(lambda **kw: seen.append(kw["fraction"]))
    status.wait(10)
    assert status.success and motor.position == pytest.approx(3.0)
    wait_until(lambda: seen and seen[-1] == 0.0, timeout=5)  # the last: nothing remains
    assert max(seen) > 0.0


def test_stop_mid_scan_cancels_the_move(devices):
    motor, det, _, stage = devices
    stage.position = 0.0
    stage.speed = 1.0  # ten seconds for the move to 10
    engine, docs = run_engine()
    stopped: list = []

    def stop_mid_scan() -> None:
        wait_until(lambda: bool(docs.get("event")) and stage.position > 0.05, timeout=30)
        stopped.append(engine.stop())  # RE.stop() while the plan runs (another thread)

    stopping = threading.Thread(target=stop_mid_scan)
    stopping.start()
    # RE.stop() stops the motor (bluesky calls its stop()): the move job is cancelled; the
    # run's call ends as bluesky ends an interrupted one.
    with pytest.raises((bluesky.utils.RunEngineInterrupted, bluesky.utils.FailedStatus)):
        engine(scan([det], motor, 0, 10, 2))
    stopping.join(30)
    assert stopped and engine.state == "idle"
    wait_until(lambda: stage.moves and stage.moves[-1][1] == "cancelled", timeout=10)
    assert stage.position < 10  # the move was cut short
    assert motor._job is not None and motor._job.status()["state"] == "cancelled"
    assert len(docs["event"]) == 1 and docs["stop"][0]["exit_status"] == "success"


def test_a_failing_job_fails_the_run(devices):
    motor, det, _, _ = devices
    engine, docs = run_engine()
    with pytest.raises(Exception):  # noqa: B017 - bluesky's FailedStatus, as it reports it
        engine(scan([det], motor, 0, 200, 3))
    assert docs["stop"][0]["exit_status"] == "fail"
    assert "end switch" in docs["stop"][0]["reason"]


def test_the_readme_example_runs(lab):
    import subprocess
    import sys

    from tests import docs
    from tests.helpers import ROOT, clean_env

    ns = lab[0]
    env = clean_env(PYROINST_NS_HOST=ns.host, PYROINST_NS_PORT=str(ns.port))
    code = docs.block("readme-bluesky") + "\nprint('POSITION', motor.position)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "POSITION 2.0" in done.stdout


def test_stopping_a_status_cancels_its_job(devices):
    motor, _, _, stage = devices
    stage.speed = 1.0
    status = motor.set(motor.position + 30)
    wait_until(lambda: motor._job.status()["state"] == "running", timeout=10)
    status.stop()
    with pytest.raises(pyroinst.JobCancelled):
        status.wait(10)
    assert motor._job.status()["state"] == "cancelled"

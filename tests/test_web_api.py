"""The HTTP API through HTTP, against a real lab (name server, demo devices); one per module."""

from __future__ import annotations

import io
import json
import socket
import time

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

import pyroinst
from devices.dummy import DummyDevice
from pyroinst import EmbeddedNameServer
from pyroinst.cli import app
from pyroinst.web.runner import WebServer
from tests.helpers import Echo, wait_until, web_lab

TOKEN = "web-api-token-7f3a9c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def lab():
    devices = {
        "dev": DummyDevice(idn_delay=0.01),
        "dev2": DummyDevice(idn_delay=0.01),
        "echo": (Echo(), {"lock_timeout": 0.2}),
    }
    with web_lab(TOKEN, devices) as (ns, server, web):
        # An API client: the token, and JSON on every request that changes something.
        headers = {**AUTH, "Content-Type": "application/json"}
        with httpx.Client(base_url=web.url.rstrip("/"), headers=headers, timeout=30) as client:
            yield ns, server, web, client


def events(response: httpx.Response, stop: str = "end", limit: float = 30.0):
    """(event, data) pairs of a Server-Sent Events response, until ``stop`` (or ``limit`` s)."""
    name, deadline = None, time.monotonic() + limit
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])
            if name == stop:
                return
        if time.monotonic() > deadline:
            return


def test_token_bearer_and_none(lab):
    ns, _, web, client = lab
    base = web.url.rstrip("/")
    refused = httpx.get(f"{base}/api/devices")
    assert refused.status_code == 401 and refused.json()["error"] == "AccessRefused"
    wrong = httpx.get(f"{base}/api/devices", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong token" in wrong.json()["message"]
    assert client.get("/api/devices").status_code == 200
    # Without a token a web server serves loopback only, and then asks nobody.
    pyroinst.set_token(TOKEN)
    with WebServer("127.0.0.1", 0, ns.host, ns.port, None) as open_web:
        assert httpx.get(f"{open_web.url}api/devices", timeout=30).status_code == 200
    with pytest.raises(pyroinst.ConfigurationError, match="needs the lab's token"):
        WebServer("0.0.0.0", 0, ns.host, ns.port, None)
    before = pyroinst.current_token()
    pyroinst.set_token(None)
    try:
        result = CliRunner().invoke(app, ["web", "--host", "0.0.0.0", "--port", "0"])
    finally:
        pyroinst.set_token(before)
    assert result.exit_code == 2 and "PYROINST_TOKEN" in result.stderr


def test_device_list_and_one_device(lab):
    _, _, _, client = lab
    devices = {d["name"]: d for d in client.get("/api/devices").json()}
    assert {"dev", "dev2", "echo"} <= set(devices)
    assert devices["dev"]["alive"] is True and devices["dev"]["reason"] == "ok"
    assert devices["dev"]["class"] == "devices.dummy.DummyDevice"
    assert devices["dev"]["reservation"] is None
    one = client.get("/api/devices/dev").json()
    measure = next(m for m in one["methods"] if m["name"] == "measure")
    assert measure["job"] is True and measure["parameters"][0]["name"] == "time"
    assert [c["name"] for c in one["channels"]] == ["temperature"]
    assert one["reservation"] is None and one["jobs"] == []


def test_calls_and_their_errors(lab):
    _, _, web, client = lab
    assert client.post("/api/devices/dev/idn").json()["result"].startswith("pyroinst,DummyDevice")
    echoed = client.post("/api/devices/echo/echo", json={"args": [[1.5, "x", None]]})
    assert echoed.status_code == 200 and echoed.json() == {"result": [1.5, "x", None]}
    arr = client.post("/api/devices/echo/big", json={"args": [4]})
    assert arr.status_code == 202
    cases = [
        (client.post("/api/devices/dev/nope"), 404, "MethodNotFound"),
        (client.post("/api/devices/ghost/idn"), 404, "DeviceNotFound"),
        (client.post("/api/devices/dev/measure", json={"args": [1, 2, 3]}), 400, "SignatureError"),
        (
            client.post("/api/devices/dev/measure", json={"kwargs": {"tme": 5}}),
            400,
            "SignatureError",
        ),
        (client.post("/api/devices/dev/idn", content=b"{not json"), 400, "BadRequest"),
        (client.post("/api/devices/dev/idn", json=[1, 2]), 400, "BadRequest"),
        (client.post("/api/devices/dev/idn", json={"args": 5}), 400, "BadRequest"),
        (client.post("/api/devices/dev/idn", content=b" " * (2 << 20)), 413, "PayloadTooLarge"),
        (client.get("/api/no/such/route"), 404, "NotFound"),
        (client.get("/api/devices/dev/idn"), 405, "MethodNotAllowed"),
        (client.get("/api/devices/dev/jobs/0000000000000000"), 404, "JobNotFound"),
        # By the annotation (measure(time: int)), as the command line converts them.
        (client.post("/api/devices/dev/measure", json={"args": ["abc"]}), 400, "SignatureError"),
        (client.post("/api/devices/dev/measure", json={"args": [2.5]}), 400, "SignatureError"),
    ]
    for response, status, error in cases:
        body = response.json()
        assert (response.status_code, body["error"]) == (status, error), body
        assert "Traceback" not in body["message"]
    assert "measure(time: int)" in cases[2][0].json()["message"]  # the signature says why
    assert "time='abc' is not a whole number" in cases[-2][0].json()["message"]
    assert not [j for j in client.get("/api/devices/dev/jobs").json() if j["method"] == "measure"]
    assert client.post("/api/devices/dev/measure", json={"args": ["5"]}).status_code == 202
    assert client.post("/api/devices/dev/idn").status_code == 200  # still serving


def test_reserved_and_busy_are_409(lab):
    _, _, _, client = lab
    alice, bob = {"X-Pyroinst-Owner": "alice"}, {"X-Pyroinst-Owner": "bob"}
    reserved = client.post("/api/devices/echo/reserve", json={"args": ["alice", 30]}, headers=alice)
    assert reserved.status_code == 200 and reserved.json()["result"]["owner"] == "alice"
    named_only = dict(alice)
    alice["X-Pyroinst-Lease"] = reserved.json()["result"]["lease"]
    listed = {d["name"]: d for d in client.get("/api/devices").json()}
    wait_until(
        lambda: {d["name"]: d for d in client.get("/api/devices").json()}["echo"]["reservation"],
        timeout=5,
    )
    refused = client.post("/api/devices/echo/echo", json={"args": [1]}, headers=bob)
    assert refused.status_code == 409 and refused.json()["error"] == "DeviceReserved"
    assert "alice" in refused.json()["message"]
    borrowed = client.post("/api/devices/echo/echo", json={"args": [1]}, headers=named_only)
    assert borrowed.status_code == 409  # alice's name without her lease
    assert client.post("/api/devices/echo/echo", json={"args": [1]}, headers=alice).json() == {
        "result": 1
    }
    held = client.post("/api/devices/echo/hold", json={"args": [10]}, headers=alice)
    assert held.status_code == 202
    wait_until(
        lambda: (
            client.get(f"/api/devices/echo/jobs/{held.json()['id']}").json()["state"] == "running"
        )
    )
    busy = client.post("/api/devices/echo/echo", json={"args": [2]}, headers=alice)
    assert busy.status_code == 409 and busy.json()["error"] == "DeviceBusy"
    stranger = client.post(f"/api/devices/echo/jobs/{held.json()['id']}/cancel", headers=bob)
    assert stranger.status_code == 409  # not bob's to cancel while alice holds the device
    cancel = client.post(f"/api/devices/echo/jobs/{held.json()['id']}/cancel", headers=alice)
    assert cancel.status_code == 200 and cancel.json()["cancelled"] is True
    assert client.post("/api/devices/echo/release", headers=alice).status_code == 200
    assert listed  # the listing answered while reserved


def test_a_job_live_then_its_result(lab):
    _, _, _, client = lab
    started = client.post("/api/devices/dev/measure", json={"args": [600]})
    assert started.status_code == 202
    job = started.json()
    assert job["state"] in ("queued", "running") and len(job["id"]) == 16
    early = client.get(f"/api/devices/dev/jobs/{job['id']}/result")
    assert early.status_code in (409, 200)
    if early.status_code == 409:
        assert early.json()["error"] == "JobStillRunning"
    seen: dict[str, list] = {"status": [], "item": [], "end": []}
    with client.stream("GET", f"/api/devices/dev/jobs/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for name, data in events(response):
            seen[name].append(data)
    progress = [s["progress"] for s in seen["status"]]
    assert progress == sorted(progress) and len(progress) >= 2
    assert seen["end"][0]["state"] == "done" and seen["end"][0]["progress"] == 1.0
    assert [i["index"] for i in seen["item"]] == list(range(len(seen["item"])))
    assert sum(i["value"]["shape"][0] for i in seen["item"]) == 600
    jobs = client.get("/api/devices/dev/jobs").json()
    assert jobs[0]["id"] == job["id"]
    result = client.get(f"/api/devices/dev/jobs/{job['id']}/result").json()["result"]
    assert result["dtype"] == "float64" and result["shape"] == [600]
    npy = client.get(f"/api/devices/dev/jobs/{job['id']}/result", params={"format": "npy"})
    array = np.load(io.BytesIO(npy.content))
    assert array.shape == (600,) and np.allclose(array, result["data"])
    csv = client.get(f"/api/devices/dev/jobs/{job['id']}/result", params={"format": "csv"}).text
    assert np.allclose(np.array(csv.split(), dtype=float), array)
    first = client.get(f"/api/devices/dev/jobs/{job['id']}/items/0", params={"format": "npy"})
    assert np.allclose(
        np.load(io.BytesIO(first.content)), array[: seen["item"][0]["value"]["shape"][0]]
    )
    missing = client.get(f"/api/devices/dev/jobs/{job['id']}/items/99999")
    assert missing.status_code == 404 and missing.json()["error"] == "ItemNotFound"
    bad = client.get(f"/api/devices/dev/jobs/{job['id']}/result", params={"format": "xls"})
    assert bad.status_code == 400
    status = client.post("/api/devices/dev/idn").json()
    assert status["result"]  # a plain call after all that


def test_cancel_a_long_job(lab):
    _, _, _, client = lab
    job = client.post("/api/devices/dev2/measure", json={"args": [60000]}).json()
    answer = client.post(f"/api/devices/dev2/jobs/{job['id']}/cancel").json()
    assert answer["cancelled"] is True
    wait_until(
        lambda: client.get(f"/api/devices/dev2/jobs/{job['id']}").json()["state"] == "cancelled"
    )
    result = client.get(f"/api/devices/dev2/jobs/{job['id']}/result")
    assert result.status_code == 409 and result.json()["error"] == "JobCancelled"


def test_channel_events(lab):
    _, _, _, client = lab
    with client.stream("GET", "/api/devices/dev/channels/temperature/events") as response:
        items = [d for n, d in events(response, stop="item", limit=10) if n == "item"]
    assert items and isinstance(items[0]["value"], float) and items[0]["time"] > 0
    missing = client.get("/api/devices/dev/channels/pressure/events")
    assert missing.status_code == 404 and missing.json()["error"] == "ChannelNotFound"


def test_disconnected_event_clients_leave_nothing(lab):
    _, server, web, client = lab
    admission = server._daemon._pyroinst_admission
    limiter = web.app.state.limiter  # the worker threads event streams read in
    job = client.post("/api/devices/dev/measure", json={"args": [60000]}).json()

    def round_of_clients(count: int) -> None:
        for _ in range(count):
            with client.stream("GET", f"/api/devices/dev/jobs/{job['id']}/events") as response:
                next(events(response, stop="item"))
            with client.stream("GET", "/api/devices/dev/channels/temperature/events") as r:
                next(iter(r.iter_lines()))

    try:
        round_of_clients(2)  # the web server's own per-thread proxies exist by now
        held = admission.held.get("127.0.0.1", 0)
        round_of_clients(10)
        # Each event stream had a connection to the device server of its own: all closed,
        # and no worker thread still reads for a client that went away.
        wait_until(lambda: admission.held.get("127.0.0.1", 0) <= held, timeout=15, interval=0.05)
        wait_until(lambda: limiter.borrowed_tokens == 0, timeout=15, interval=0.05)
    finally:
        client.post(f"/api/devices/dev/jobs/{job['id']}/cancel")


def test_browser_session_cookie_and_same_origin(lab):
    _, _, web, _ = lab
    base = web.url.rstrip("/")
    with httpx.Client(base_url=base, timeout=30) as browser:
        login = browser.get("/", params={"token": TOKEN, "owner": "carol"})
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/api/devices").status_code == 200
        refused = browser.post("/api/devices/echo/echo", json={"args": [1]})
        assert refused.status_code == 403 and "origin" in refused.json()["message"]
        foreign = browser.post(
            "/api/devices/echo/echo", json={"args": [1]}, headers={"Origin": "http://evil.test"}
        )
        assert foreign.status_code == 403
        same = browser.post("/api/devices/echo/echo", json={"args": [1]}, headers={"Origin": base})
        assert same.status_code == 200
        # The session that reserves keeps the lease; another session named carol does not.
        origin = {"Origin": base, "Content-Type": "application/json"}
        reserved = browser.post(
            "/api/devices/echo/reserve", json={"args": ["carol", 30]}, headers=origin
        )
        assert reserved.status_code == 200
        assert browser.post(
            "/api/devices/echo/echo", json={"args": [2]}, headers=origin
        ).json() == {"result": 2}
        with httpx.Client(base_url=base, timeout=30) as second:
            assert second.get("/", params={"token": TOKEN, "owner": "carol"}).status_code == 303
            other_tab = second.post("/api/devices/echo/echo", json={"args": [3]}, headers=origin)
            assert other_tab.status_code == 409
        assert browser.post("/api/devices/echo/release", headers=origin).status_code == 200
        page = browser.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text
    with httpx.Client(base_url=base, timeout=30) as other:
        wrong = other.get("/", params={"token": "nope"})
        assert wrong.status_code == 401 and "not the lab" in wrong.text
        form = other.post("/login", data={"token": TOKEN})
        assert form.status_code == 303 and other.get("/api/devices").status_code == 200
        assert other.get("/static/vendor/uplot/LICENSE").status_code == 200


def test_openapi_and_offline_docs(lab):
    _, _, web, client = lab
    schema = httpx.get(f"{web.url}api/openapi.json", timeout=30).json()
    for route in (
        "/api/devices",
        "/api/devices/{name}",
        "/api/devices/{name}/{method}",
        "/api/devices/{name}/jobs",
        "/api/devices/{name}/jobs/{job_id}",
        "/api/devices/{name}/jobs/{job_id}/result",
        "/api/devices/{name}/jobs/{job_id}/cancel",
        "/api/devices/{name}/jobs/{job_id}/events",
        "/api/devices/{name}/jobs/{job_id}/items/{index}",
        "/api/devices/{name}/channels/{channel}/events",
    ):
        assert route in schema["paths"], route
    docs = httpx.get(f"{web.url}api/docs", timeout=30).text
    assert "/api/devices/{name}/jobs/{job_id}/events" in docs and "http" not in docs.split("<body")[
        0
    ].replace("http-equiv", "")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_name_server_down_at_start_then_back():
    port = free_port()
    pyroinst.set_token(TOKEN)
    with WebServer("127.0.0.1", 0, "127.0.0.1", port, TOKEN) as web:
        url = f"{web.url}api/devices"
        down = httpx.get(url, headers=AUTH, timeout=30)
        assert down.status_code == 502 and down.json()["error"] == "NameServerNotFound"
        with EmbeddedNameServer("127.0.0.1", port, token=TOKEN):
            wait_until(lambda: httpx.get(url, headers=AUTH, timeout=30).status_code == 200)


def test_the_readme_curl_lines(lab, tmp_path):
    """The README's curl example, as written, against this lab's web server."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("curl") is None:
        pytest.skip("no curl here")
    from tests import docs

    block = docs.block("web-curl", "bash")
    _, _, web, _ = lab
    block = block.replace("localhost:8080", f"127.0.0.1:{web.port}")
    proc = subprocess.run(
        ["bash", "-e", "-c", block],
        cwd=tmp_path,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYROINST_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"result":"pyroinst,DummyDevice' in proc.stdout
    assert "event: end" in proc.stdout and "(2000,)" in proc.stdout

"""The dashboard stays up for every user: event streams fan out from one reader, one client
holds at most 16, connections to a device server stay bounded and go back when nobody
watches (with the garbage collector off), worker threads coming and going leak nothing,
and a reservation's owner survives the web server's own calls."""

from __future__ import annotations

import gc
import json
import threading
import time

import anyio._backends._asyncio as anyio_asyncio
import httpx
import pytest

import pyroinst
from devices.dummy import DummyDevice
from pyroinst.web import lab as web_lab_module
from pyroinst.web.pool import MAX_DEVICE_CONNECTIONS
from tests.helpers import Echo, wait_until, web_lab

TOKEN = "streams-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    devices = {"dev": DummyDevice(idn_delay=0.01), "echo": Echo()}
    with web_lab(TOKEN, devices, audit_log=str(audit)) as (ns, server, web):
        yield ns, server, web, audit


def held(server) -> int:
    """Connections the device server has from 127.0.0.1 (the web server and this test)."""
    return server._daemon._pyroinst_admission.held.get("127.0.0.1", 0)


def test_seventy_streams_from_one_session(lab):
    ns, server, web, _ = lab
    base = web.url.rstrip("/")
    api = httpx.Client(base_url=base, headers=AUTH, timeout=30)
    job = api.post("/api/devices/dev/measure", json={"args": [120000]}).json()
    # The pool has what the ordinary requests below need.
    api.get("/api/devices/dev")
    api.post("/api/devices/echo/echo", json={"args": [0]})
    baseline = held(server)
    browser = httpx.Client(base_url=base, timeout=30)
    assert browser.get("/", params={"token": TOKEN}).status_code == 303
    opened, statuses, release = [], [], threading.Event()
    lock = threading.Lock()
    paths = [
        f"/api/devices/dev/jobs/{job['id']}/events",
        "/api/devices/dev/channels/temperature/events",
    ]

    def watch(n: int) -> None:
        with browser.stream("GET", paths[n % 2]) as response:
            with lock:
                statuses.append(response.status_code)
            if response.status_code == 200:
                lines = response.iter_lines()  # kept: dropping it would close the stream
                next(lines)
                with lock:
                    opened.append(n)
                release.wait(30)

    gc.disable()  # nothing may depend on the garbage collector to give connections back
    threads = [threading.Thread(target=watch, args=(n,)) for n in range(70)]
    try:
        try:
            for thread in threads:
                thread.start()
            wait_until(lambda: len(statuses) == 70, timeout=30, interval=0.05)
            assert statuses.count(200) == 16 and statuses.count(429) == 54, sorted(statuses)
            wait_until(lambda: len(opened) == 16, timeout=30, interval=0.05)
            # Everyone else keeps working: another user of the web server, and a CLI client.
            assert api.get("/api/devices/dev").status_code == 200
            assert api.post("/api/devices/echo/echo", json={"args": [7]}).json() == {"result": 7}
            direct = pyroinst.connect("echo", ns.host, ns.port)
            assert direct.echo(8) == 8
            direct._pyroRelease()
            # Two things watched: two readers, however many streams.
            assert web.app.state.feeds.open_feeds() == 2
            assert held(server) - baseline <= 2 + 1, (held(server), baseline)
        finally:
            release.set()
            for thread in threads:
                thread.join(30)
        wait_until(lambda: held(server) <= baseline, timeout=2.5, interval=0.05)
        assert web.app.state.feeds.open_feeds() == 0
    finally:
        gc.enable()
        api.post(f"/api/devices/dev/jobs/{job['id']}/cancel")
        api.close()
        browser.close()


def test_worker_threads_coming_and_going_leak_no_connections(lab, monkeypatch):
    """AnyIO retires idle worker threads and makes new ones: proxies are not tied to them."""
    _, server, web, _ = lab
    monkeypatch.setattr(anyio_asyncio.WorkerThread, "MAX_IDLE_TIME", 0.2)
    base = web.url.rstrip("/")
    peak, answers = 0, []
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as api:
        for _ in range(20):
            results: list[int] = []

            def burst(into: list[int]) -> None:
                into.append(api.post("/api/devices/echo/echo", json={"args": [1]}).status_code)
                into.append(api.get("/api/devices/dev").status_code)

            threads = [threading.Thread(target=burst, args=(results,)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            answers += results
            peak = max(peak, held(server))
            time.sleep(0.3)  # longer than the idle time: the pool's threads retire meanwhile
    assert set(answers) == {200}, answers
    assert peak <= MAX_DEVICE_CONNECTIONS + 4, peak  # the pool's bound, and this test's own


def test_the_owner_survives_the_web_servers_own_calls(lab, monkeypatch):
    _, _, web, audit = lab
    monkeypatch.setattr(web_lab_module, "DESCRIBE_TTL", 0.2)
    base = web.url.rstrip("/")
    alice = {**AUTH, "X-Pyroinst-Owner": "alice"}
    with httpx.Client(base_url=base, timeout=30) as api:
        granted = api.post("/api/devices/echo/reserve", json={"args": ["alice", 60]}, headers=alice)
        assert granted.status_code == 200
        alice["X-Pyroinst-Lease"] = granted.json()["result"]["lease"]
        try:
            deadline = time.monotonic() + 3.0  # fifteen expiries of the description cache
            while time.monotonic() < deadline:
                answer = api.post("/api/devices/echo/echo", json={"args": ["mine"]}, headers=alice)
                assert answer.status_code == 200, answer.text
                assert api.get("/api/devices/echo", headers=alice).status_code == 200
                time.sleep(0.1)
        finally:
            api.post("/api/devices/echo/release", headers=alice)
    calls = [json.loads(line) for line in audit.read_text().splitlines()]
    mine = [c for c in calls if c["method"] == "echo" and c["args"] == ["mine"]]
    assert mine and all(c["owner"] == "alice" and c["outcome"] == "ok" for c in mine)

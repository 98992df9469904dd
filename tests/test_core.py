"""The core contract: plain Pyro5 proxies, jobs, locking, name registration, shutdown."""

from __future__ import annotations

import threading

import numpy as np
import Pyro5.api
import Pyro5.errors
import pytest

import pyroinst
from devices.dummy import DummyDevice
from pyroinst import InstServer, JobHandle
from tests.helpers import Echo, wait_until


def pyroname(ns, name="dev"):
    return f"PYRONAME:{name}@{ns.host}:{ns.port}"


def run_in_thread(fn):
    """Run ``fn`` in another thread (its own proxy); re-raise its failure here."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_plain_proxy_in_another_thread(ns, make_server):
    make_server({"dev": DummyDevice(idn_delay=0.05)})

    def client():
        dev = Pyro5.api.Proxy(pyroname(ns))
        assert dev.initialize() is True
        idn = dev.idn()
        assert isinstance(idn, str) and "DummyDevice" in idn
        job = dev.measure(1000)
        assert isinstance(job, JobHandle)
        assert job.status()["state"] in ("queued", "running")  # returned at once
        seen = [job.progress()]
        while not job.wait(timeout=0.05):
            seen.append(job.progress())
        seen.append(job.progress())
        assert seen[0] < 1.0 and seen[-1] == 1.0
        assert seen == sorted(seen)
        data = job.result()
        assert data.dtype == np.float64 and data.shape == (1000,)
        again = job.result()
        assert np.array_equal(data, again)
        assert job.status()["state"] == "done"
        return True

    assert run_in_thread(client)


def test_cancel_long_measure(ns, make_server):
    make_server({"dev": DummyDevice(idn_delay=0)})
    dev = Pyro5.api.Proxy(pyroname(ns))
    job = dev.measure(60_000)
    wait_until(lambda: job.status()["state"] == "running")
    assert job.cancel() is True
    assert job.wait(timeout=2.0)
    assert job.status()["state"] == "cancelled"
    with pytest.raises(pyroinst.JobCancelled, match="cancelled"):
        job.result()
    assert job.cancel() is False  # finished: no error
    assert dev.ping() is True


def test_sixteen_devices_run_jobs_at_once(ns, make_server):
    devices = {f"d{i}": DummyDevice(idn_delay=0) for i in range(16)}
    make_server(devices)
    proxies = {name: Pyro5.api.Proxy(pyroname(ns, name)) for name in devices}
    jobs = [p.measure(30_000) for p in proxies.values()]
    wait_until(lambda: all(j.status()["state"] == "running" for j in jobs), timeout=15)
    for job in jobs:
        job.cancel()
    for job in jobs:
        assert job.wait(5)


def test_jobs_on_one_device_run_in_order(ns, make_server):
    make_server({"dev": DummyDevice(idn_delay=0)})
    dev = Pyro5.api.Proxy(pyroname(ns))
    first = dev.measure(30_000)
    second = dev.measure(200)
    wait_until(lambda: first.status()["state"] == "running")
    assert second.status()["state"] == "queued"
    assert [s["id"] for s in dev.job_list()] == [second.id, first.id]  # newest first
    first.cancel()
    assert second.wait(10)
    assert second.status()["state"] == "done"
    assert first.status()["state"] == "cancelled"


def test_plain_call_waits_for_running_job(ns, make_server):
    echo = Echo()
    make_server({"dev": echo})
    dev = Pyro5.api.Proxy(pyroname(ns))
    job = dev.hold(30)
    wait_until(lambda: job.status()["state"] == "running")
    threading.Timer(0.2, echo.gate.set).start()
    assert dev.echo(5) == 5  # waited for the lock, then ran
    assert job.status()["state"] == "done"


def test_plain_call_with_short_lock_timeout_is_busy(ns, make_server):
    srv = make_server(lock_timeout=0.2)
    echo = Echo()
    srv.add_device(echo, "dev")
    dev = Pyro5.api.Proxy(pyroname(ns))
    job = dev.hold(30)
    wait_until(lambda: job.status()["state"] == "running")
    with pytest.raises(pyroinst.DeviceBusy) as info:
        dev.echo(1)
    assert job.id in str(info.value) and "hold" in str(info.value)
    assert "lock_timeout" in str(info.value)
    assert dev.cached() == "cached"  # @concurrent: no lock
    echo.gate.set()
    assert job.wait(5)
    assert dev.echo(2) == 2


def test_job_start_runs_any_method_as_job(ns, make_server):
    make_server({"dev": DummyDevice(idn_delay=0.01)})
    dev = Pyro5.api.Proxy(pyroname(ns))
    job = dev.job_start("idn")
    assert isinstance(job, JobHandle) and job.device == "dev"
    assert "DummyDevice" in job.result(timeout=5)
    assert dev.job_status(job.id)["method"] == "idn"


def test_jobs_option_marks_third_party_methods(ns, make_server):
    from tests.helpers import ThirdParty

    srv = make_server()
    srv.add_device(ThirdParty(), "tp", jobs={"acquire"})
    tp = Pyro5.api.Proxy(pyroname(ns, "tp"))
    job = tp.acquire(5)
    assert isinstance(job, JobHandle)
    assert job.result(5) == [0, 1, 2, 3, 4]
    assert any(m["name"] == "acquire" and m["job"] for m in tp.describe()["methods"])


def test_properties_are_exposed_through_the_lock(ns, make_server):
    make_server({"dev": Echo()})
    dev = Pyro5.api.Proxy(pyroname(ns))
    assert dev.temperature == 21.5
    dev.temperature = 30
    assert dev.temperature == 30.0
    props = {p["name"]: p for p in dev.describe()["properties"]}
    assert props["temperature"]["writable"] is True


def test_describe(ns, make_server):
    make_server({"dev": DummyDevice()})
    info = Pyro5.api.Proxy(pyroname(ns)).describe()
    assert info["class"] == "devices.dummy.DummyDevice"
    assert "stand-in instrument" in info["doc"]
    methods = {m["name"]: m for m in info["methods"]}
    assert methods["measure"]["job"] is True and methods["idn"]["job"] is False
    assert methods["measure"]["signature"].startswith("measure(time: int)")
    assert "close" not in methods


def test_close_is_not_remotely_callable(ns, make_server):
    echo = Echo()
    make_server({"dev": echo})
    dev = Pyro5.api.Proxy(pyroname(ns))
    with pytest.raises(AttributeError):
        dev.close()
    with pytest.raises(AttributeError):
        dev.job_start("close")
    assert echo.closed is False
    assert dev.ping()


def test_private_and_attributes_not_reachable(ns, make_server):
    make_server({"dev": Echo()})
    dev = Pyro5.api.Proxy(pyroname(ns))
    with pytest.raises(AttributeError):
        dev._device  # noqa: B018
    with pytest.raises(AttributeError):
        dev.gate  # noqa: B018 - a plain attribute
    with pytest.raises(AttributeError):
        dev.job_start("_call", "echo", (), {})


def test_stop_removes_names_and_closes_devices(ns):
    echo = Echo()
    srv = InstServer(ns_host=ns.host, ns_port=ns.port)
    srv.add_device(echo, "dev")
    srv.add_device(DummyDevice(), "dev2")
    with srv:
        names = pyroinst.locate_ns(ns.host, ns.port).list()
        assert "dev" in names and "dev2" in names
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        names = nsp.list()
    assert "dev" not in names and "dev2" not in names
    assert echo.closed is True


def test_stop_cancels_running_jobs(ns):
    srv = InstServer(ns_host=ns.host, ns_port=ns.port, shutdown_timeout=5)
    srv.add_device(DummyDevice(), "dev")
    srv.start()
    try:
        dev = Pyro5.api.Proxy(pyroname(ns))
        job = dev.measure(60_000)
        wait_until(lambda: job.status()["state"] == "running")
    finally:
        srv.stop()
    assert srv.store.all_jobs()[0].state == "cancelled"


def test_stale_registration_is_overwritten(ns, make_server):
    import socket

    with socket.socket() as s:  # a port nobody listens on any more
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        nsp.register("dev", f"PYRO:dev@127.0.0.1:{dead_port}")
    srv = make_server({"dev": Echo()})
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        assert str(nsp.lookup("dev")) == srv.uri("dev")
    assert Pyro5.api.Proxy(pyroname(ns)).echo(3) == 3


def test_live_registration_is_refused(ns, make_server):
    first = make_server({"dev": Echo()})
    second = make_server()
    with pytest.raises(pyroinst.NameInUse, match="live server"):
        second.add_device(Echo(), "dev")
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        assert str(nsp.lookup("dev")) == first.uri("dev")
    assert Pyro5.api.Proxy(pyroname(ns)).echo(4) == 4
    second.add_device(Echo(), "other")  # the refused server still works
    assert Pyro5.api.Proxy(pyroname(ns, "other")).echo(5) == 5


def test_metadata_and_list_devices(ns, make_server):
    srv = make_server({"dev": DummyDevice(), "dev2": DummyDevice()})
    devices = pyroinst.list_devices(ns.host, ns.port)
    assert [d["name"] for d in devices] == ["dev", "dev2"]
    assert devices[0]["class"] == "devices.dummy.DummyDevice"
    assert devices[0]["host"] == "127.0.0.1"
    assert devices[0]["uri"] == srv.uri("dev")
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        _, meta = nsp.lookup("dev", return_metadata=True)
    assert "pyroinst.device" in meta
    assert "pyroinst.class:devices.dummy.DummyDevice" in meta
    assert any(m.startswith("pyroinst.host:") for m in meta)


def test_same_class_added_twice_differs(ns, make_server):
    make_server({"a": DummyDevice(idn_delay=0), "b": DummyDevice(idn_delay=0)})
    a = Pyro5.api.Proxy(pyroname(ns, "a")).idn()
    b = Pyro5.api.Proxy(pyroname(ns, "b")).idn()
    assert a != b


def test_connect_helper(ns, make_server):
    make_server({"dev": Echo()})
    dev = pyroinst.connect("dev", ns_host=ns.host, ns_port=ns.port, timeout=5)
    assert dev.echo("x") == "x"
    assert dev._pyroTimeout == 5


def test_connect_uses_environment(ns, make_server, monkeypatch):
    make_server({"dev": Echo()})
    monkeypatch.setenv("PYROINST_NS_HOST", ns.host)
    monkeypatch.setenv("PYROINST_NS_PORT", str(ns.port))
    assert pyroinst.connect("dev").echo(1) == 1
    assert [d["name"] for d in pyroinst.list_devices()] == ["dev"]


def test_server_embeds_name_server_when_none_answers():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with InstServer(ns_host="127.0.0.1", ns_port=port) as srv:
        srv.add_device(Echo(), "dev")
        assert srv.embedded_ns is not None and srv.embedded_ns.port == port
        assert pyroinst.connect("dev", ns_host="127.0.0.1", ns_port=port).echo(2) == 2
    with pytest.raises(pyroinst.NameServerNotFound):
        pyroinst.locate_ns("127.0.0.1", port, timeout=1)


def test_many_handles_share_one_connection(ns, make_server):
    make_server({"dev": Echo()})
    dev = Pyro5.api.Proxy(pyroname(ns))
    handles = [dev.job_start("echo", i) for i in range(50)]
    assert [h.result(5) for h in handles] == list(range(50))
    assert len(pyroinst.client._local.proxies) == 1


def test_job_handle_rebuilt_from_id(ns, make_server):
    make_server({"dev": Echo()})
    dev = Pyro5.api.Proxy(pyroname(ns))
    job = dev.big(10)
    again = JobHandle(job.id, job.device, job.uri)
    assert again == job
    assert np.array_equal(again.result(5), np.arange(10.0))


def test_retention_evicts_and_says_expired(ns, make_server):
    make_server({"dev": Echo()}, max_jobs=3)
    dev = Pyro5.api.Proxy(pyroname(ns))
    jobs = [dev.job_start("echo", i) for i in range(5)]
    assert jobs[-1].wait(5)  # one worker, in order: all have finished
    with pytest.raises(pyroinst.JobNotFound, match="expired"):
        dev.job_result(jobs[0].id)
    assert jobs[-1].result() == 4
    assert len(dev.job_list()) == 3


def test_retention_by_result_bytes(ns, make_server):
    make_server({"dev": Echo()}, max_result_bytes=10_000)
    dev = Pyro5.api.Proxy(pyroname(ns))
    first = dev.big(1000)  # 8 kB
    first.wait(5)
    second = dev.big(1000)
    second.wait(5)
    with pytest.raises(pyroinst.JobNotFound, match="bytes"):
        first.result()
    assert second.result().shape == (1000,)


def test_current_job_outside_a_job_is_harmless():
    dev = DummyDevice(idn_delay=0)
    data = dev.measure(30)  # no server: runs directly
    assert data.shape == (30,)
    ctx = pyroinst.current_job()
    ctx.set_progress(0.5)
    ctx.check_cancelled()
    assert ctx.cancelled is False

"""Every bad input of the core: a clear error of the right type, and the server still serves."""

from __future__ import annotations

import Pyro5.api
import Pyro5.errors
import pytest

import pyroinst
from devices.dummy import DummyDevice
from tests.helpers import Clashing, Echo, RangeError


@pytest.fixture
def served(ns, make_server):
    srv = make_server({"dev": Echo(), "dummy": DummyDevice(idn_delay=0)})
    dev = Pyro5.api.Proxy(f"PYRONAME:dev@{ns.host}:{ns.port}")
    yield srv, dev
    # after every bad input: the server still answers, on a new connection too
    assert dev.ping() is True
    fresh = Pyro5.api.Proxy(f"PYRONAME:dev@{ns.host}:{ns.port}")
    assert fresh.echo("still here") == "still here"
    fresh._pyroRelease()
    dev._pyroRelease()


def test_unknown_device_names_device_and_name_server(ns, served):
    with pytest.raises(pyroinst.DeviceNotFound) as info:
        pyroinst.connect("nope", ns_host=ns.host, ns_port=ns.port)
    message = str(info.value)
    assert "'nope'" in message and f"{ns.host}:{ns.port}" in message
    assert "dev" in message  # lists what is there
    with pytest.raises(Pyro5.errors.NamingError, match="nope"):
        Pyro5.api.Proxy(f"PYRONAME:nope@{ns.host}:{ns.port}").ping()


def test_unknown_method(served):
    _, dev = served
    with pytest.raises(AttributeError, match="no_such"):
        dev.no_such()
    with pytest.raises(AttributeError, match="no method 'no_such'.*echo"):
        dev.job_start("no_such")


def test_driver_exception_arrives_as_remote_error(served):
    _, dev = served
    with pytest.raises(pyroinst.RemoteError) as info:
        dev.fail("sensor on fire")
    err = info.value
    assert err.remote_type == "tests.helpers.DriverError"
    assert err.remote_message == "sensor on fire"
    assert "DriverError" in str(err) and "sensor on fire" in str(err)
    assert "def fail" in err.remote_traceback or "in fail" in err.remote_traceback
    assert not isinstance(err, Pyro5.errors.SerializeError)


def test_driver_exception_keeps_builtin_base(served):
    _, dev = served
    with pytest.raises(ValueError) as info:
        dev.out_of_range()
    assert isinstance(info.value, pyroinst.RemoteError)
    assert info.value.remote_type == "tests.helpers.RangeError"
    assert RangeError.__name__ in str(info.value)


def test_builtin_exception_keeps_its_type(served):
    _, dev = served
    with pytest.raises(KeyError, match="missing"):
        dev.builtin_fail()


def test_wrong_arguments_show_signature(served, ns):
    _, dev = served
    with pytest.raises(TypeError) as info:
        dev.echo(1, 2, 3)
    assert "echo(value: Any) -> Any" in str(info.value)
    with pytest.raises(TypeError, match=r"measure\(time: int\)"):
        Pyro5.api.Proxy(f"PYRONAME:dummy@{ns.host}:{ns.port}").measure(bogus=1)
    with pytest.raises(TypeError, match="echo"):
        dev.job_start("echo")  # missing argument, checked before queuing
    assert dev.job_list() == []


def test_failing_job_is_failed_and_others_unaffected(served):
    _, dev = served
    bad = dev.failing_job("disk full")
    good = dev.big(5)
    assert good.wait(5) and bad.wait(5)
    status = bad.status()
    assert status["state"] == "failed"
    assert "DriverError" in status["error"] and "disk full" in status["error"]
    with pytest.raises(pyroinst.RemoteError, match="disk full") as info:
        bad.result()
    assert "failing_job" in info.value.remote_traceback
    with pytest.raises(pyroinst.RemoteError):  # repeatable
        bad.result()
    assert good.status()["state"] == "done"
    assert good.result().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_unknown_job_id(served):
    _, dev = served
    with pytest.raises(pyroinst.JobNotFound, match="no job 'deadbeef'"):
        dev.job_result("deadbeef")
    with pytest.raises(pyroinst.JobNotFound, match="deadbeef"):
        dev.job_status("deadbeef")
    with pytest.raises(pyroinst.JobNotFound):
        dev.job_cancel("deadbeef")


def test_job_of_another_device_is_not_found(served, ns):
    _, dev = served
    dummy = Pyro5.api.Proxy(f"PYRONAME:dummy@{ns.host}:{ns.port}")
    job = dummy.measure(1)
    assert job.wait(5)
    with pytest.raises(pyroinst.JobNotFound):
        dev.job_result(job.id)
    dummy._pyroRelease()


def test_two_devices_under_one_name(served):
    srv, dev = served
    with pytest.raises(pyroinst.NameInUse, match="'dev' is already served"):
        srv.add_device(Echo(), "dev")


def test_cancel_of_finished_job_returns_false(served):
    _, dev = served
    job = dev.big(3)
    assert job.wait(5)
    assert job.cancel() is False
    assert job.status()["state"] == "done"


def test_unserializable_result(served):
    _, dev = served
    with pytest.raises(pyroinst.NotSerializableError) as info:
        dev.unsendable()
    message = str(info.value)
    assert "dev.unsendable()" in message and "Unsendable" in message
    job = dev.job_start("unsendable")
    assert job.wait(5)
    with pytest.raises(pyroinst.NotSerializableError, match="Unsendable"):
        job.result()


def test_reserved_name_collision_is_refused(served):
    srv, _ = served
    with pytest.raises(pyroinst.DeviceDefinitionError, match="ping"):
        srv.add_device(Clashing(), "clash")


def test_unknown_job_name_in_jobs_option(served):
    srv, _ = served
    with pytest.raises(pyroinst.DeviceDefinitionError, match="'nothing'"):
        srv.add_device(Echo(), "e2", jobs={"nothing"})


def test_class_instead_of_instance(served):
    srv, _ = served
    with pytest.raises(pyroinst.DeviceDefinitionError, match="instance"):
        srv.add_device(Echo, "e3")


def test_job_result_timeout(served):
    _, dev = served
    job = dev.hold(30)
    with pytest.raises(pyroinst.JobTimeout, match="still"):
        dev.job_result(job.id, 0.05)
    with pytest.raises(pyroinst.JobTimeout):
        job.result(timeout=0.05)
    job.cancel()
    assert job.wait(5)

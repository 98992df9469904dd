"""A server's life: no driver call after close(), no second start, removal beats the heartbeat."""

from __future__ import annotations

import threading
import time

import Pyro5.errors
import pytest

import pyroinst
from pyroinst import InstServer
from tests.helpers import wait_until


class Recorder:
    """Records every call, and whether the driver was already closed then."""

    def __init__(self) -> None:
        self.closed = False
        self.calls: list[tuple[str, bool]] = []
        self.entered = threading.Event()

    def slow(self, seconds: float) -> None:
        """Hold the device for ``seconds``."""
        self.calls.append(("slow", self.closed))
        self.entered.set()
        time.sleep(seconds)

    def mark(self) -> str:
        """A quick call."""
        self.calls.append(("mark", self.closed))
        return "marked"

    def close(self) -> None:
        """Release the (pretend) hardware handle."""
        self.closed = True


def test_no_driver_call_runs_after_close(ns):
    driver = Recorder()
    server = InstServer(
        ns_host=ns.host, ns_port=ns.port, shutdown_timeout=0.2, lock_timeout=30, heartbeat=0
    )
    server.add_device(driver, "rec")
    server.start()
    outcomes: dict[str, object] = {}

    def call(method: str, *args: object) -> None:
        dev = pyroinst.connect("rec", ns.host, ns.port, reconnect_timeout=1)
        try:
            outcomes[method] = getattr(dev, method)(*args)
        except Exception as exc:  # noqa: BLE001 - checked below
            outcomes[method] = exc
        finally:
            dev._pyroRelease()

    holder = threading.Thread(target=call, args=("slow", 1.5))
    holder.start()
    assert driver.entered.wait(10)
    waiter = threading.Thread(target=call, args=("mark",))
    waiter.start()
    wait_until(lambda: server._servants["rec"]._lock.waiting == 1)  # mark() waits for slow()
    server.stop()  # the lock stays busy past shutdown_timeout: close() runs anyway
    holder.join(30)
    waiter.join(30)
    assert driver.closed
    assert ("mark", True) not in driver.calls and ("slow", True) not in driver.calls
    assert not isinstance(outcomes.get("mark"), str)  # it never ran
    err = outcomes.get("mark")
    assert isinstance(
        err, pyroinst.DeviceClosed | Pyro5.errors.CommunicationError | pyroinst.ConnectionLost
    ), err


def test_device_closed_error_reaches_the_caller(ns):
    driver = Recorder()
    server = InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    server.add_device(driver, "rec")
    server.start()
    try:
        dev = pyroinst.connect("rec", ns.host, ns.port)
        assert dev.mark() == "marked"
        server._servants["rec"]._shutdown(1.0)  # closed, still registered and listening
        with pytest.raises(pyroinst.DeviceClosed, match="shutting down"):
            dev.mark()
        assert driver.calls == [("mark", False)]
        dev._pyroRelease()
    finally:
        server.stop()


def test_a_stopped_server_cannot_start_again(ns):
    driver = Recorder()
    server = InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    server.add_device(driver, "rec")
    server.start()
    server.stop()
    assert driver.closed
    with pytest.raises(pyroinst.PyroinstError, match="new InstServer"):
        server.start()
    with pytest.raises(pyroinst.PyroinstError, match="new InstServer"):
        server.add_device(Recorder(), "other")
    assert not server.running
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        assert "rec" not in nsp.list()


def test_removal_wins_over_a_heartbeat_in_flight(ns, monkeypatch):
    import pyroinst.registration as server_module

    server = InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    server.add_device(Recorder(), "rec")
    server.start()
    try:
        with pyroinst.locate_ns(ns.host, ns.port) as nsp:
            nsp.remove("rec")  # the name server lost it: the heartbeat will register it again
        heartbeat_copied = threading.Event()
        go_on = threading.Event()
        original = server_module.locate_ns
        heartbeat_thread: list[threading.Thread] = []

        def locate(*args, **kwargs):
            if heartbeat_thread and threading.current_thread() is heartbeat_thread[0]:
                heartbeat_copied.set()  # the entries are copied by now
                assert go_on.wait(30)
            return original(*args, **kwargs)

        monkeypatch.setattr(server_module, "locate_ns", locate)
        beat = threading.Thread(target=server.check_registrations)
        heartbeat_thread.append(beat)
        beat.start()
        assert heartbeat_copied.wait(10)
        remover = threading.Thread(target=server.remove_device, args=("rec",))
        remover.start()
        wait_until(lambda: "rec" not in server._servants)
        go_on.set()
        beat.join(30)
        remover.join(30)
        with pyroinst.locate_ns(ns.host, ns.port) as nsp:
            assert "rec" not in nsp.list()
    finally:
        server.stop()

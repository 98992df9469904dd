"""Reservations: one client holds a device; others are refused until release or expiry."""

from __future__ import annotations

import time

import pytest
from Pyro5.callcontext import current_context

import pyroinst
from tests.helpers import Echo, wait_until


@pytest.fixture
def two_clients(ns, make_server):
    make_server({"dev": Echo()})
    alice = pyroinst.connect("dev", ns.host, ns.port)
    bob = pyroinst.connect("dev", ns.host, ns.port)
    yield alice, bob
    alice._pyroRelease()
    bob._pyroRelease()


def test_reservation_blocks_a_second_client(two_clients):
    alice, bob = two_clients
    info = alice.reserve("alice", 30)
    assert info["owner"] == "alice" and 29 < info["remaining_s"] <= 30
    assert alice.echo(1) == 1  # the owner's calls go through
    job = alice.big(5)
    assert job.result(10).shape == (5,)
    with pytest.raises(pyroinst.DeviceReserved) as err:
        bob.echo(2)
    assert "'alice'" in str(err.value) and "until" in str(err.value)
    assert err.value.owner == "alice"
    for attempt in (
        lambda: bob.big(3),
        lambda: bob.job_start("echo", 1),
        lambda: setattr(bob, "temperature", 5),
        lambda: bob.reserve("bob", 10),
        lambda: bob.release(),
        lambda: bob.job_cancel(job.id),
    ):
        with pytest.raises(pyroinst.DeviceReserved):
            attempt()
    assert bob.cached() == "cached"  # @concurrent stays open
    assert bob.reservation()["owner"] == "alice"
    assert bob.job_status(job.id)["state"] == "done"  # reading jobs stays open
    assert bob.ping()
    assert alice.release() is True
    assert bob.echo(3) == 3
    assert bob.reservation() is None


def test_reservation_expires_with_its_lease(two_clients):
    alice, bob = two_clients
    alice.reserve("alice", 1.0)
    with pytest.raises(pyroinst.DeviceReserved):
        bob.echo(1)
    wait_until(lambda: bob.reservation() is None, timeout=5)
    assert bob.echo(2) == 2
    bob.reserve("bob", 30)  # now bob can have it
    with pytest.raises(pyroinst.DeviceReserved, match="'bob'"):
        alice.echo(3)


def test_renewing_keeps_the_reservation(two_clients):
    alice, bob = two_clients
    alice.reserve("alice", 1.0)
    for _ in range(4):  # 1.6 s in all: longer than one lease
        time.sleep(0.4)  # renewing is the behaviour under test, not synchronisation
        alice.reserve("alice", 1.0)
        with pytest.raises(pyroinst.DeviceReserved):
            bob.echo(1)
    assert alice.release() is True


def test_plain_proxy_owner_annotation(two_clients, ns):
    import Pyro5.api

    alice, _ = two_clients
    lease = alice.reserve("alice", 30)["lease"]
    plain = Pyro5.api.Proxy(f"PYRONAME:dev@{ns.host}:{ns.port}")
    with pytest.raises(pyroinst.DeviceReserved):
        plain.echo(1)
    current_context.annotations["PIOW"] = b"alice"
    try:
        with pytest.raises(pyroinst.DeviceReserved, match="without its lease"):
            plain.echo(1)  # the owner's name alone is not enough
        current_context.annotations["PILS"] = bytes.fromhex(lease)
        assert plain.echo(1) == 1
    finally:
        current_context.annotations.pop("PIOW", None)
        current_context.annotations.pop("PILS", None)
    plain._pyroRelease()
    alice.release()


def test_the_owners_name_does_not_borrow_the_lease(two_clients):
    """A second client with the token and the owner's name can neither call, renew nor
    release; the owner (the proxy that reserved, and its job handles) can."""
    alice, mallory = two_clients
    granted = alice.reserve("alice", 30)
    assert len(bytes.fromhex(granted["lease"])) == 16
    mallory._pyroinst_owner = "alice"  # what connect(owner="alice") would present
    for attempt in (
        lambda: mallory.echo(1),
        lambda: mallory.big(3),
        lambda: mallory.reserve("alice", 60),
        lambda: mallory.release(),
    ):
        with pytest.raises(pyroinst.DeviceReserved, match="without its lease"):
            attempt()
    mallory._pyroinst_lease = "00" * 16  # a guessed secret
    with pytest.raises(pyroinst.DeviceReserved):
        mallory.echo(1)
    assert alice.echo(2) == 2
    job = alice.big(4)
    assert job.result(timeout=10).shape == (4,)  # the handle presents the lease too
    renewed = alice.reserve("alice", 60)
    assert renewed["lease"] == granted["lease"] and renewed["remaining_s"] > 30
    assert alice.release() is True
    assert mallory.echo(3) == 3


def test_bad_lease(two_clients):
    alice, _ = two_clients
    with pytest.raises(ValueError, match="lease_s"):
        alice.reserve("alice", -1)
    with pytest.raises(ValueError, match="owner"):
        alice.reserve("", 10)


def test_cli_reserve_call_release(ns, make_server, tmp_path):
    from typer.testing import CliRunner

    from pyroinst.cli import app

    make_server({"dev": Echo()})
    runner = CliRunner()
    base = ["--ns-host", ns.host, "--ns-port", str(ns.port)]
    result = runner.invoke(app, [*base, "--owner", "alice", "reserve", "dev", "--lease", "30"])
    assert result.exit_code == 0 and "reserved by alice" in result.stdout
    result = runner.invoke(app, [*base, "--owner", "bob", "call", "dev", "echo", "1"])
    assert result.exit_code == 1 and "reserved by 'alice'" in result.stderr
    result = runner.invoke(app, [*base, "--owner", "alice", "call", "dev", "echo", "1"])
    assert result.exit_code == 0 and result.stdout.strip() == "1"
    assert "reserved by alice" in runner.invoke(app, [*base, "info", "dev"]).stdout
    # Another user (another state folder, so not alice's lease) naming alice is refused.
    other = {"PYROINST_STATE_DIR": str(tmp_path / "mallory")}
    result = runner.invoke(app, [*base, "--owner", "alice", "call", "dev", "echo", "1"], env=other)
    assert result.exit_code == 1 and "without its lease" in result.stderr
    result = runner.invoke(app, [*base, "--owner", "alice", "release", "dev"], env=other)
    assert result.exit_code == 1
    result = runner.invoke(app, [*base, "--owner", "alice", "release", "dev"])
    assert result.exit_code == 0 and "released" in result.stdout
    assert runner.invoke(app, [*base, "--owner", "bob", "call", "dev", "echo", "2"]).exit_code == 0
    result = runner.invoke(app, [*base, "reserve", "dev"])
    assert result.exit_code == 2 and "--owner" in result.stderr

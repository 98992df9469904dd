"""QCoDeS instruments served from a lab file by a real `pyroinst serve`, used through
RemoteInstrument in a Station, a Measurement and do1d into a real sqlite database."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pyroinst
from tests import docs
from tests.helpers import clean_env, serve_process, stop_process, wait_until

qcodes = pytest.importorskip("qcodes")
from pyroinst.contrib.qcodes import RemoteInstrument  # noqa: E402

# The README's lab file, and more.
LAB = (
    docs.block("readme-qcodes-lab", "toml")
    + """
[devices.dci]
class = "qcodes.instrument_drivers.mock_instruments:DummyChannelInstrument"
kwargs = { name = "dci" }

[devices.dmm]
class = "tests.qcodes_drivers:Meter"
kwargs = { name = "dmm", source = "dac" }

[devices.src]
class = "tests.qcodes_drivers:SimSource"
kwargs = { name = "src", address = "GPIB0::7::INSTR", pyvisa_sim_file = "tests.sims:source.yaml" }
"""
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    ns = pyroinst.EmbeddedNameServer("127.0.0.1", 0).start()
    folder = tmp_path_factory.mktemp("qcodes-lab")
    (folder / "lab.toml").write_text(LAB)
    proc = serve_process(
        ns,
        str(folder / "lab.toml"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wanted = {"dac", "dci", "dmm", "src"}
        wait_until(
            lambda: (
                proc.poll() is not None
                or wanted <= {d["name"] for d in pyroinst.list_devices(ns.host, ns.port)}
            ),
            timeout=60,
            interval=0.1,
        )
        assert proc.poll() is None, proc.stderr.read()
        yield ns, folder
    finally:
        stop_process(proc)
        ns.stop()


@pytest.fixture
def remote(lab):
    ns = lab[0]
    made = []

    def make(name: str, device: str) -> RemoteInstrument:
        inst = RemoteInstrument(name, device, ns_host=ns.host, ns_port=ns.port)
        made.append(inst)
        return inst

    yield make
    for inst in made:
        inst.close()


def test_parameters_round_trip_with_their_metadata(remote):
    dac = remote("dac_here", "dac")
    dac.ch1(0.5)
    assert dac.ch1() == 0.5
    assert (dac.ch1.unit, dac.ch1.label) == ("V", "Gate ch1")
    with pytest.raises(ValueError):
        dac.ch1(1000)  # the validator travelled: refused before sending
    assert dac.ch1() == 0.5
    snap = dac.snapshot()
    assert snap["pyroinst_device"] == "dac" and "remote" in snap
    assert snap["remote"]["parameters"]["ch1"]["value"] == 0.5


def test_channels_and_submodules(remote):
    dci = remote("dci_here", "dci")
    assert {"A", "F", "channels"} <= set(dci.submodules)
    assert dci.A.temperature() == dci.channels[0].temperature()
    dci.B.temperature(12.5)
    assert dci.channels[1].temperature() == 12.5


def test_destructive_members_are_refused_and_instruments_stay_open(lab, remote):
    ns = lab[0]
    proxy = pyroinst.connect("dac", ns.host, ns.port)
    for name in ("close_all", "remove_parameter", "close"):
        with pytest.raises(AttributeError, match="not offered to clients"):
            getattr(proxy, name)
    methods = {m["name"] for m in proxy.describe()["methods"]}
    assert not {"close_all", "remove_parameter", "write", "ask"} & methods
    assert proxy.get("ch2") is not None  # still open, still serving
    pyroinst.disconnect(proxy)
    dac = remote("dac_open", "dac")
    dac.ch2(0.25)
    assert dac.ch2() == 0.25


def test_do1d_into_a_real_database(lab, remote, tmp_path):
    from qcodes.dataset import (
        do1d,
        initialise_or_create_database_at,
        load_by_id,
        load_or_create_experiment,
    )
    from qcodes.station import Station

    dac = remote("dac_m", "dac")
    dmm = remote("dmm_m", "dmm")
    station = Station(dac, dmm)
    assert set(station.components) == {"dac_m", "dmm_m"}
    initialise_or_create_database_at(str(tmp_path / "experiments.db"))
    load_or_create_experiment("remote", sample_name="served")
    dmm.offset(0.1)
    dataset, _, _ = do1d(dac.ch1, 0.0, 1.0, 11, 0.0, dmm.v, do_plot=False)
    data = load_by_id(dataset.run_id).get_parameter_data()["dmm_m_v"]
    x = np.asarray(data["dac_m_ch1"])
    y = np.asarray(data["dmm_m_v"])
    assert np.allclose(x, np.linspace(0, 1, 11))
    assert np.allclose(y, 2 * x + 0.1)
    snapshot = load_by_id(dataset.run_id).snapshot
    assert snapshot["station"]["instruments"]["dac_m"]["pyroinst_device"] == "dac"


def test_a_pyvisa_sim_backed_driver(lab, remote):
    src = remote("src_here", "src")
    assert src.IDN()["model"] == "SimSource"
    src.voltage(2.5)
    assert src.voltage() == 2.5 and src.voltage.unit == "V"
    with pytest.raises(ValueError):
        src.voltage(11)  # its validator, here
    proxy = pyroinst.connect("src", lab[0].host, lab[0].port)
    for name in ("write", "ask", "write_raw", "visa_handle", "close_all"):
        with pytest.raises(AttributeError, match="not offered"):
            getattr(proxy, name)
    assert proxy.qcodes_get("voltage") == 2.5
    pyroinst.disconnect(proxy)


@pytest.mark.parametrize("marker", ["readme-qcodes", "frameworks-do1d"])
def test_the_docs_examples_run(lab, marker, tmp_path):
    ns = lab[0]
    env = clean_env(PYROINST_NS_HOST=ns.host, PYROINST_NS_PORT=str(ns.port))
    done = subprocess.run(
        [sys.executable, "-c", docs.block(marker)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    if marker == "readme-qcodes":
        assert done.stdout.split() == ["0.5", "V"]
    else:
        assert (tmp_path / "experiments.db").exists()

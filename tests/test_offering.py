"""What a served object offers is the lab's choice: expose/hide/attributes, safe profiles
for PyMeasure and PyVISA objects (real libraries, a pyvisa-sim backend), and remote
exceptions raised as their own class where the client may import it."""

from __future__ import annotations

import sys
import types

import pytest

import pyroinst
from pyroinst.config import LabFileError, parse_lab

pyvisa = pytest.importorskip("pyvisa")
pytest.importorskip("pyvisa_sim")
fakes = pytest.importorskip("pymeasure.instruments.fakes")
from pymeasure.instruments import Channel, Instrument  # noqa: E402


class Output(Channel):
    """One output of the fake: its level kept here."""

    @property
    def level(self) -> float:
        """The output level (V)."""
        return getattr(self, "_level", 0.0)

    @level.setter
    def level(self, value: float) -> None:
        self._level = float(value)


class ChannelFake(fakes.SwissArmyFake):
    """PyMeasure's SwissArmyFake with two channels."""

    out_a = Instrument.ChannelCreator(Output, "A")
    out_b = Instrument.ChannelCreator(Output, "B")


class Plain:
    """A driver with raw I/O and a plain attribute."""

    def __init__(self) -> None:
        self.rate = 10.0  # a plain attribute: offered only through attributes=
        self.closed = False

    def measure(self) -> float:
        """A reading."""
        return 1.5

    def write_raw(self, text: str) -> None:
        """Raw I/O."""

    def write_config(self, text: str) -> None:
        """Raw I/O too."""

    def reset(self) -> str:
        """Resets."""
        return "reset"

    def close(self) -> None:
        """Only the server closes."""
        self.closed = True


class Refused(Exception):
    """An exception of a module the client may be told to trust."""

    def __init__(self, code: int) -> None:
        super().__init__(f"refused with code {code}")
        self.code = code


class Unimportable(Exception):
    """Its class names a module that exists nowhere here."""


Unimportable.__module__ = "pyroinst_never_imported.errors"


class Failing:
    """Raises Refused."""

    def fail(self, code: int) -> None:
        """Raise Refused(code)."""
        raise Refused(code)

    def fail_elsewhere(self) -> None:
        """Raise an exception of a module the client does not have."""
        raise Unimportable("from a module that is nowhere")


@pytest.fixture(scope="module")
def lab():
    ns = pyroinst.EmbeddedNameServer("127.0.0.1", 0).start()
    server = pyroinst.InstServer(host="127.0.0.1", port=0, ns_host=ns.host, ns_port=ns.port)
    rm = pyvisa.ResourceManager("@sim")
    resource = rm.open_resource("ASRL1::INSTR", read_termination="\n", write_termination="\r\n")
    fake = ChannelFake()
    plain = Plain()
    server.add_device(plain, "plain", hide=["write*"], expose=["write_config"], attributes=["rate"])
    server.add_device(Plain(), "only", hide=["*"], expose=["measure"])
    server.add_device(resource, "visa")
    server.add_device(
        rm.open_resource("ASRL1::INSTR", read_termination="\n", write_termination="\r\n"),
        "visa-rw",
        expose=["query", "read"],
    )
    server.add_device(fake, "fake")
    server.add_device(Failing(), "failing")
    server.start()
    yield ns, server, plain
    server.stop()
    rm.close()
    ns.stop()


def connect(lab, name):
    ns = lab[0]
    return pyroinst.connect(name, ns.host, ns.port)


def offered(dev) -> tuple[set[str], set[str]]:
    description = dev.describe()
    return (
        {m["name"] for m in description["methods"]},
        {p["name"] for p in description["properties"]},
    )


def test_hide_expose_and_attributes(lab):
    plain = lab[2]
    dev = connect(lab, "plain")
    methods, properties = offered(dev)
    assert methods == {"measure", "reset", "write_config"}  # write* hidden, one exposed
    assert properties == {"rate"}
    assert dev.rate == 10.0
    dev.rate = 12.5
    assert plain.rate == 12.5 and dev.rate == 12.5
    with pytest.raises(AttributeError, match=r"not offered to clients: the lab hides it"):
        dev.write_raw("*RST")
    with pytest.raises(AttributeError, match=r"expose = \['close'\]|closing is the server's"):
        dev.close()
    assert not plain.closed
    only = connect(lab, "only")
    assert offered(only) == ({"measure"}, set())
    assert only.measure() == 1.5
    for dev_ in (dev, only):
        pyroinst.disconnect(dev_)


def test_bad_settings_are_refused_clearly():
    server = pyroinst.InstServer(host="127.0.0.1", port=0)
    with pytest.raises(pyroinst.DeviceDefinitionError, match="expose names 'nosuch'"):
        server.add_device(Plain(), "p1", expose=["nosuch"])
    with pytest.raises(pyroinst.DeviceDefinitionError, match="profile 'qcodez' is unknown"):
        server.add_device(Plain(), "p2", profile="qcodez")
    with pytest.raises(pyroinst.DeviceDefinitionError, match="list of names"):
        server.add_device(Plain(), "p3", hide=[""])
    assert server.devices == {}  # nothing half-added


def test_lab_file_keys():
    config = parse_lab(
        {
            "devices": {
                "dev": {
                    "class": "devices.dummy:DummyDevice",
                    "hide": ["measure"],
                    "expose": [],
                    "attributes": ["serial"],
                    "profile": "none",
                }
            }
        }
    )
    spec = config.devices[0]
    assert (spec.hide, spec.attributes, spec.profile) == (["measure"], ["serial"], "none")
    with pytest.raises(LabFileError, match=r"\[devices.dev\]: hide"):
        parse_lab({"devices": {"dev": {"class": "devices.dummy:DummyDevice", "hide": [1]}}})
    with pytest.raises(LabFileError, match="profile = 'visa' is unknown"):
        parse_lab({"devices": {"dev": {"class": "devices.dummy:DummyDevice", "profile": "visa"}}})


def test_a_pyvisa_resource_is_safe_and_its_attributes_work(lab):
    dev = connect(lab, "visa")
    methods, properties = offered(dev)
    assert {"timeout", "resource_name", "read_termination"} <= properties
    assert not {"write", "read", "query", "write_raw", "lock", "close"} & methods
    assert dev.resource_name == "ASRL1::INSTR"
    dev.timeout = 1234
    assert dev.timeout == 1234
    with pytest.raises(AttributeError, match="pyvisa profile hides it"):
        dev.query("?IDN")
    pyroinst.disconnect(dev)


def test_a_visa_io_error_is_caught_as_itself(lab):
    dev = connect(lab, "visa-rw")
    assert dev.query("?IDN") == "LSG Serial #1234"
    dev.timeout = 50
    with pytest.raises(pyvisa.errors.VisaIOError) as caught:
        dev.read()  # nothing to read: the instrument times out
    assert caught.value.error_code == pyvisa.constants.VI_ERROR_TMO
    assert "pyvisa_sim" in "".join(caught.value.__notes__)  # where it was raised
    assert dev.query("?IDN") == "LSG Serial #1234"  # and it goes on serving
    pyroinst.disconnect(dev)


def test_a_pymeasure_instrument_with_its_profile(lab):
    dev = connect(lab, "fake")
    methods, properties = offered(dev)
    assert {"voltage", "output_voltage", "wave"} <= properties
    hidden = {
        "shutdown",
        "write",
        "read",
        "ask",
        "control",
        "measurement",
        "setting",
        "add_child",
        "ChannelCreator",
    }
    assert not hidden & methods
    dev.output_voltage = 2.0
    assert dev.output_voltage == 2.0
    assert dev.voltage == 10  # its fake measurement
    with pytest.raises(AttributeError, match="pymeasure profile hides it"):
        dev.shutdown()
    assert dev.output_voltage == 2.0  # still serving, not shut down
    pyroinst.disconnect(dev)


def test_exceptions_keep_their_type_only_where_allowed(lab, monkeypatch):
    dev = connect(lab, "failing")
    # Not allowed: RemoteError naming the class.
    with pytest.raises(pyroinst.RemoteError, match="Refused"):
        dev.fail(7)
    # Allowed, but its module is not imported here: never imported for a server.
    monkeypatch.setenv("PYROINST_REMOTE_EXCEPTIONS", "pyroinst_never_imported")
    with pytest.raises(pyroinst.RemoteError, match="from a module that is nowhere"):
        dev.fail_elsewhere()
    assert "pyroinst_never_imported" not in sys.modules
    with pytest.raises(pyroinst.RemoteError):  # and Refused's module is not allowed
        dev.fail(8)
    monkeypatch.setenv("PYROINST_REMOTE_EXCEPTIONS", "tests.test_offering")
    # Allowed and imported: raised as itself, with its attributes and the driver's frames.
    with pytest.raises(Refused) as caught:
        dev.fail(9)
    assert caught.value.code == 9 and str(caught.value) == "refused with code 9"
    assert "in fail" in "".join(caught.value.__notes__)
    monkeypatch.delenv("PYROINST_REMOTE_EXCEPTIONS")
    module = types.ModuleType("elsewhere")
    monkeypatch.setitem(sys.modules, "elsewhere", module)
    pyroinst.errors.allow_remote_exceptions("elsewhere")
    with pytest.raises(pyroinst.RemoteError):  # a different module: still RemoteError
        dev.fail(10)
    pyroinst.disconnect(dev)


def test_a_pymeasure_channel_is_reachable(lab):
    dev = connect(lab, "fake")
    channels = dev.pymeasure_channels()
    assert set(channels) == {"A", "B"} and channels["A"]["level"]["writable"] is True
    dev.channel_set("B", "level", 2.5)
    assert dev.channel_get("B", "level") == 2.5 and dev.channel_get("A", "level") == 0.0
    with pytest.raises(KeyError, match="channels: A, B"):
        dev.channel_get("C", "level")
    with pytest.raises(AttributeError, match="no property '_level'"):
        dev.channel_get("B", "_level")  # only properties, never other attributes
    assert dev.channel_get("B", "level") == 2.5
    pyroinst.disconnect(dev)


def test_the_docs_example_serves(tmp_path):
    """docs/frameworks.md's example: a pyvisa-sim resource with raw I/O exposed."""
    from tests import docs

    namespace: dict = {}
    exec(docs.block("frameworks-offer"), namespace)  # noqa: S102 - our own docs' example
    server = namespace["server"]
    assert "visa" in server.devices
    namespace["rm"].close()

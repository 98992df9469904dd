"""QCoDeS instruments over the network (extra ``pyroinst[qcodes]``).

**Serving.** A QCoDeS instrument added to a server as it is (``add_device(dac, "dac")`` or a
lab file) gets the ``qcodes`` profile: what is destructive or internal is hidden
(``close_all``, ``remove_parameter``, raw ``write``/``ask``, ...) and these methods are
offered besides its own (``get``, ``set``, ``call`` of QCoDeS functions ...):

* ``qcodes_tree()``: its parameters by dotted path, through submodules and channel lists,
  with unit, label, docstring, whether they can be read and set, and their validator (as
  text, and as data for ``Numbers``/``Ints``/``Enum``/``Bool`` ones);
* ``qcodes_get(path)`` / ``qcodes_set(path, value)``: a parameter by dotted path
  (``"ch1"``, ``"A.temperature"``, ``"channels.0.temperature"``); only parameters are
  reached this way, never other attributes;
* ``qcodes_snapshot(update=False)``: the instrument's snapshot, JSON-safe.

**Using.** ``RemoteInstrument("dac")`` (or ``connect("dac")``) is a real
``qcodes.Instrument`` built from that tree: its ``Parameter``s get and set the served
ones, its submodules and channel lists are there, so it works in a ``Station``, a
``Measurement`` and ``do1d``/``do2d``; ``dac.ch1(0.5)`` then ``dac.ch1()`` round-trip. Its
snapshot names the served device (``pyroinst_device``, ``pyroinst_uri``) and holds the
served instrument's own snapshot under ``remote``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from qcodes.instrument import Instrument, InstrumentChannel
from qcodes.instrument.channel import ChannelTuple
from qcodes.parameters import Parameter
from qcodes.utils import NumpyJSONEncoder
from qcodes.validators import Bool, Enum, Ints, Numbers, Validator

import pyroinst

__all__ = ["RemoteInstrument", "connect", "SERVED"]

log = logging.getLogger(__name__)


# -- serving ---------------------------------------------------------------------------
def _vals(parameter: Any) -> dict[str, Any] | None:
    vals = getattr(parameter, "vals", None)
    if vals is None:
        return None
    text = repr(vals)
    if isinstance(vals, Numbers | Ints):
        kind = "Ints" if isinstance(vals, Ints) else "Numbers"
        return {
            "text": text,
            "type": kind,
            "min": _plain(vals.min_value),
            "max": _plain(vals.max_value),
        }
    if isinstance(vals, Bool):
        return {"text": text, "type": "Bool"}
    if isinstance(vals, Enum):
        values = [v for v in vals._values if isinstance(v, str | int | float | bool)]
        return {"text": text, "type": "Enum", "values": values}
    return {"text": text}


def _plain(value: Any) -> float | int | None:
    """A validator bound as a plain number (None: unbounded or not a number)."""
    if hasattr(value, "item"):
        value = value.item()  # numpy scalars
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        return None
    return value


def _parameter_entry(parameter: Any) -> dict[str, Any]:
    return {
        "class": f"{type(parameter).__module__}.{type(parameter).__qualname__}",
        "unit": str(getattr(parameter, "unit", "") or ""),
        "label": str(getattr(parameter, "label", "") or ""),
        "doc": str(getattr(parameter, "__doc__", "") or ""),
        "gettable": bool(getattr(parameter, "gettable", True)),
        "settable": bool(getattr(parameter, "settable", False)),
        "vals": _vals(parameter),
    }


def _tree(node: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": str(getattr(node, "short_name", getattr(node, "name", ""))),
        "class": f"{type(node).__module__}.{type(node).__qualname__}",
        "parameters": {n: _parameter_entry(p) for n, p in node.parameters.items()},
        "functions": sorted(getattr(node, "functions", {}) or {}),
        "submodules": {},
    }
    subs = getattr(node, "submodules", {}) or {}
    keys = {id(sub): key for key, sub in subs.items()}
    for name, sub in subs.items():
        if isinstance(sub, ChannelTuple):
            # A channel that is also a submodule is named by its key; others described.
            out["submodules"][name] = {
                "channels": [
                    {"submodule": keys[id(ch)]} if id(ch) in keys else _tree(ch) for ch in sub
                ],
            }
        else:
            out["submodules"][name] = _tree(sub)
    return out


def _resolve(instrument: Any, path: str) -> Any:
    """The parameter at ``path``: through submodules (and channel lists by index or
    name) only, so nothing but parameters can be reached."""
    parts = str(path).split(".")
    node = instrument
    for part in parts[:-1]:
        subs = getattr(node, "submodules", {}) or {}
        if isinstance(node, ChannelTuple):
            found = None
            if part.isdigit() and int(part) < len(node):
                found = node[int(part)]
            else:
                found = next((ch for ch in node if ch.short_name == part), None)
            if found is None:
                raise KeyError(f"channel list {node.short_name!r} has no channel {part!r}")
            node = found
        elif part in subs:
            node = subs[part]
        else:
            raise KeyError(
                f"{getattr(node, 'full_name', node)!r} has no submodule {part!r} "
                f"(it has: {', '.join(sorted(subs)) or 'none'})"
            )
    name = parts[-1]
    parameters = getattr(node, "parameters", {}) or {}
    if name not in parameters:
        raise KeyError(
            f"{getattr(node, 'full_name', node)!r} has no parameter {name!r} "
            f"(it has: {', '.join(sorted(parameters)) or 'none'})"
        )
    return parameters[name]


def qcodes_tree(instrument: Any) -> dict[str, Any]:
    """The instrument's parameters by dotted path, through submodules and channel lists
    (unit, label, docstring, gettable/settable, validator)."""
    return _tree(instrument)


def qcodes_get(instrument: Any, path: str) -> Any:
    """The value of the parameter at dotted ``path`` (e.g. ``"ch1"``, ``"A.temperature"``)."""
    return _resolve(instrument, path).get()


def qcodes_set(instrument: Any, path: str, value: Any) -> None:
    """Set the parameter at dotted ``path`` to ``value`` (its validator checks it)."""
    _resolve(instrument, path).set(value)


def qcodes_snapshot(instrument: Any, update: bool = False) -> dict[str, Any]:
    """The instrument's QCoDeS snapshot, JSON-safe (``update``: read the values first)."""
    text = json.dumps(instrument.snapshot(update=update), cls=NumpyJSONEncoder)
    return json.loads(text)  # type: ignore[no-any-return]


#: The methods the qcodes profile offers besides the instrument's own.
SERVED = {
    "qcodes_tree": qcodes_tree,
    "qcodes_get": qcodes_get,
    "qcodes_set": qcodes_set,
    "qcodes_snapshot": qcodes_snapshot,
}


# -- using ------------------------------------------------------------------------------
def _validator(entry: dict[str, Any] | None) -> Validator | None:
    if not entry:
        return None
    kind = entry.get("type")
    try:
        if kind == "Numbers":
            return Numbers(*(v for v in (entry.get("min"), entry.get("max")) if v is not None))
        if kind == "Ints":
            return Ints(*(v for v in (entry.get("min"), entry.get("max")) if v is not None))
        if kind == "Bool":
            return Bool()
        if kind == "Enum" and entry.get("values"):
            return Enum(*entry["values"])
    except (TypeError, ValueError):
        return None
    return None  # the served parameter checks it anyway


def _add_parameters(node: Any, tree: dict[str, Any], proxy: Any, prefix: str) -> None:
    for name, entry in tree.get("parameters", {}).items():
        path = f"{prefix}{name}"
        if name in node.parameters:
            continue  # IDN: QCoDeS makes it, from get_idn() (the served one's, below)
        vals = _validator(entry.get("vals"))
        node.add_parameter(
            name,
            parameter_class=Parameter,
            get_cmd=(lambda p=path: proxy.qcodes_get(p)) if entry.get("gettable") else False,
            set_cmd=(lambda v, p=path: proxy.qcodes_set(p, v)) if entry.get("settable") else False,
            unit=entry.get("unit") or None,
            label=entry.get("label") or None,
            docstring=entry.get("doc") or None,
            **({"vals": vals} if vals is not None else {}),
        )
    for name, sub in tree.get("submodules", {}).items():
        if "channels" in sub:
            continue  # channel lists after their channels (below)
        module = InstrumentChannel(node, name)  # a channel can also go into a channel list
        _add_parameters(module, sub, proxy, f"{prefix}{name}.")
        node.add_submodule(name, module)
    for name, sub in tree.get("submodules", {}).items():
        if "channels" not in sub:
            continue
        members = []
        for index, channel in enumerate(sub["channels"]):
            if "submodule" in channel:
                members.append(node.submodules[channel["submodule"]])
                continue
            made = InstrumentChannel(node, f"{name}_{index}")
            _add_parameters(made, channel, proxy, f"{prefix}{name}.{index}.")
            members.append(made)
        node.add_submodule(name, ChannelTuple(node, name, InstrumentChannel, members))


class RemoteInstrument(Instrument):
    """A served QCoDeS instrument, as a local ``qcodes.Instrument``.

    ``name``: the QCoDeS name here (unique among this process's instruments);
    ``device``: the served device's name (default: ``name``); ``ns_host``/``ns_port``/
    ``timeout`` as for ``pyroinst.connect``. Parameters get and set the served ones (one
    network call each); ``remote`` is the device's ``DeviceProxy``.
    """

    def __init__(
        self,
        name: str,
        device: str | None = None,
        ns_host: str | None = None,
        ns_port: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.remote = pyroinst.connect(device or name, ns_host, ns_port, timeout=timeout)
        self._pyroinst_device = device or name
        tree = self._pyroinst_tree = self.remote.qcodes_tree()
        super().__init__(name, **kwargs)
        _add_parameters(self, tree, self.remote, "")

    def get_idn(self) -> dict[str, str | None]:
        """The served instrument's IDN (its ``IDN`` parameter, if it has one)."""
        if "IDN" in self._pyroinst_tree.get("parameters", {}):
            value = self.remote.qcodes_get("IDN")
            if isinstance(value, dict):
                return value
        return {"vendor": None, "model": self._pyroinst_device, "serial": None, "firmware": None}

    def snapshot_base(
        self, update: bool | None = False, params_to_skip_update: Any = None
    ) -> dict[str, Any]:
        """QCoDeS's snapshot of this proxy, naming the served device, with the served
        instrument's own snapshot under ``remote``."""
        snap = super().snapshot_base(update=update, params_to_skip_update=params_to_skip_update)
        snap["pyroinst_device"] = self._pyroinst_device
        snap["pyroinst_uri"] = str(self.remote._pyroUri)
        try:
            snap["remote"] = self.remote.qcodes_snapshot(bool(update))
        except Exception as exc:  # noqa: BLE001 - a snapshot never fails a measurement
            log.warning("snapshot of served %r failed: %s", self._pyroinst_device, exc)
            snap["remote"] = {"error": f"{type(exc).__name__}: {exc}"}
        return snap

    def close(self) -> None:
        """Close this proxy's connections and remove it from QCoDeS's instruments (the
        served instrument stays open: it is the server's)."""
        pyroinst.disconnect(self.remote)
        super().close()


def connect(name: str, **options: Any) -> RemoteInstrument:
    """``RemoteInstrument(name, **options)``."""
    return RemoteInstrument(name, **options)

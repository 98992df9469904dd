"""Which members of a served object a client may reach: the lab's choice, safe by default.

A driver offers its public methods and properties. Three settings change that, per device
(``add_device(..., expose=, hide=, attributes=)`` or the lab file's keys of the same
names), each a list of names or glob patterns (``"write*"``):

* ``hide``: not offered;
* ``expose``: offered even if hidden (by ``hide`` or by the profile) -- so ``hide =
  ["*"]`` with ``expose = ["query", "timeout"]`` offers just those two;
* ``attributes``: descriptors that are not ``property`` objects (PyVISA's attributes,
  plain instance attributes) offered as properties, read and set through the driver.

A **profile** hides what is destructive or internal in known driver families, found from
the classes' module names (nothing is imported): QCoDeS instruments (``close_all``,
``remove_parameter``, raw ``write``/``ask`` ...), PyMeasure instruments (``shutdown``,
raw I/O, the class helpers ``control``/``measurement``/``setting``, channel creators),
PyVISA resources (raw I/O, locks, event handlers; ``timeout``, ``resource_name``, the
terminations ... offered as attributes). ``profile = "none"`` turns it off; ``close`` is
never offered (one client must not shut an instrument for everyone).
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import DeviceDefinitionError
from .members import HIDDEN_NAMES, Extra, public_members

__all__ = ["Offer", "PROFILES", "Profile", "hidden_members", "offered_members", "profile_of"]


@dataclass(frozen=True)
class Profile:
    """What a driver family hides and which of its attributes it offers."""

    name: str
    modules: tuple[str, ...]  # a class in the MRO from one of these module prefixes
    hide: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    #: "module:NAME" of a dict of functions(device, ...) offered as methods too.
    extras: str = ""

    def extra_members(self) -> dict[str, Extra]:
        """The methods this profile adds (imported only for a device of its family)."""
        if not self.extras:
            return {}
        module, _, attr = self.extras.partition(":")
        table = getattr(importlib.import_module(module), attr)
        return {name: Extra(func) for name, func in table.items()}


PROFILES: dict[str, Profile] = {
    "qcodes": Profile(
        "qcodes",
        ("qcodes.instrument.", "qcodes.instrument_drivers."),
        hide=(
            "close_all",
            "get_component",
            "ancestors",
            "root_instrument",
            "parent",
            "snapshot_base",
            "remove_parameter",
            "remove_instance",
            "record_instance",
            "find_instrument",
            "exist",
            "is_valid",
            "instances",
            "add_parameter",
            "add_function",
            "add_submodule",
            "add_component",
            "remove_component",
            "write",
            "ask",
            "write_raw",
            "ask_raw",
            "connect_message",
            "load_metadata",
            "print_readable_snapshot",
            "invalidate_cache",
            "visa_handle",
            "resource_manager",
            "set_address",
            "set_terminator",
            "device_clear",
            "close_visa",
        ),
        extras="pyroinst.contrib.qcodes:SERVED",
    ),
    "pymeasure": Profile(
        "pymeasure",
        ("pymeasure.instruments.",),
        hide=(
            "shutdown",
            "write",
            "read",
            "ask",
            "write_bytes",
            "read_bytes",
            "write_binary_values",
            "read_binary_values",
            "binary_values",
            "values",
            "control",
            "measurement",
            "setting",
            "add_child",
            "remove_child",
            "BaseChannelCreator",
            "ChannelCreator",
            "MultiChannelCreator",
            "get_channels",
            "get_channel_pairs",
            "clear",
            "adapter",
        ),
        extras="pyroinst.contrib.pymeasure:SERVED",
    ),
    "pyvisa": Profile(
        "pyvisa",
        ("pyvisa.resources.",),
        hide=(
            "write*",
            "read*",
            "query*",
            "assert_trigger",
            "flush",
            "lock*",
            "unlock",
            "install_handler",
            "uninstall_handler",
            "enable_event",
            "disable_event",
            "discard_events",
            "wait_on_event",
            "wrap_handler",
            "register",
            "ignore_warning",
            "before_close",
            "get_visa_attribute",
            "set_visa_attribute",
            "open",
            "clear",
            "visalib",
            "session",
            "send_end",
            "send_break",
        ),
        attributes=(
            "timeout",
            "resource_name",
            "resource_class",
            "interface_type",
            "read_termination",
            "write_termination",
            "query_delay",
            "chunk_size",
            "encoding",
            "baud_rate",
            "data_bits",
            "parity",
            "stop_bits",
        ),
    ),
}


def _names(value: Iterable[str] | str | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    names = tuple(value)
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise DeviceDefinitionError(f"{what} must be a list of names or patterns, got {bad!r}")
    return names


@dataclass(frozen=True)
class Offer:
    """A device's ``expose``, ``hide``, ``attributes`` and ``profile`` ("auto": by class)."""

    expose: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    profile: str = "auto"

    @classmethod
    def of(
        cls,
        expose: Iterable[str] | str | None = None,
        hide: Iterable[str] | str | None = None,
        attributes: Iterable[str] | str | None = None,
        profile: str | None = None,
    ) -> Offer:
        """Checked settings (DeviceDefinitionError naming what is wrong)."""
        chosen = "auto" if profile is None else str(profile)
        if chosen not in ("auto", "none", *PROFILES):
            raise DeviceDefinitionError(
                f"profile {chosen!r} is unknown: use auto, none or one of "
                f"{', '.join(sorted(PROFILES))}"
            )
        return cls(
            _names(expose, "expose"),
            _names(hide, "hide"),
            _names(attributes, "attributes"),
            chosen,
        )


def profile_of(cls: type, chosen: str = "auto") -> Profile | None:
    """The profile that applies to driver class ``cls`` (None: none does)."""
    if chosen == "none":
        return None
    if chosen != "auto":
        return PROFILES[chosen]
    modules = [klass.__module__ + "." for klass in cls.__mro__]
    for profile in PROFILES.values():
        if any(m.startswith(prefix) for m in modules for prefix in profile.modules):
            return profile
    return None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _attribute(name: str, descriptor: Any) -> property:
    """A descriptor (or plain attribute) offered as a property of the driver."""

    def fget(device: Any) -> Any:
        return getattr(device, name)

    def fset(device: Any, value: Any) -> None:
        setattr(device, name, value)

    simple = descriptor is None or isinstance(descriptor, int | float | str | bytes)
    doc = None if simple else inspect.getdoc(descriptor)
    return property(fget, fset, doc=doc or f"The driver's attribute {name!r}.")


def offered_members(cls: type, offer: Offer | None = None) -> dict[str, Any]:
    """The members of ``cls`` a client may reach (methods, properties), by name."""
    offer = offer or Offer()
    profile = profile_of(cls, offer.profile)
    hidden = (*(profile.hide if profile else ()), *offer.hide)
    members: dict[str, Any] = dict(public_members(cls))
    if profile is not None:
        members.update(profile.extra_members())
    offered = {
        name: member
        for name, member in members.items()
        if not _matches(name, hidden) or _matches(name, offer.expose)
    }
    wanted = (*(profile.attributes if profile else ()), *offer.attributes)
    for name in wanted:
        if name.startswith("_") or name in HIDDEN_NAMES:
            raise DeviceDefinitionError(f"attributes: {name!r} cannot be offered")
        if _matches(name, offer.hide) and not _matches(name, offer.expose):
            continue
        try:
            raw = inspect.getattr_static(cls, name)
        except AttributeError:
            raw = None
            if name not in offer.attributes:
                continue  # a profile's attribute this class does not have
        offered[name] = raw if isinstance(raw, property) else _attribute(name, raw)
    for name in offer.expose:
        if not any(ch in name for ch in "*?[") and name not in offered:
            raise DeviceDefinitionError(
                f"expose names {name!r}, which {cls.__name__} does not have as a public "
                "method or property (attributes = [...] offers other attributes)",
                method=name,
            )
    return offered


def hidden_members(cls: type, offer: Offer | None = None) -> dict[str, str]:
    """The public members of ``cls`` not offered, each with the reason (for the error a
    client gets when it asks for one)."""
    offer = offer or Offer()
    profile = profile_of(cls, offer.profile)
    offered = offered_members(cls, offer)
    hidden = {}
    for name in public_members(cls):
        if name in offered:
            continue
        if _matches(name, offer.hide):
            hidden[name] = "the lab hides it (hide)"
        elif profile is not None:
            hidden[name] = f"the {profile.name} profile hides it (destructive or internal)"
    for name in sorted(HIDDEN_NAMES):
        hidden[name] = "closing is the server's: one client must not close it for everyone"
    return hidden

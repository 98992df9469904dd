"""PyMeasure instruments served as they are: their channels reached by id.

A PyMeasure instrument's channels (``ChannelCreator``/``MultiChannelCreator``) are child
objects, not members of its class, so the ``pymeasure`` profile offers them through
these methods; only the channel classes' properties (``control``, ``measurement``,
``setting``) are reached, never other attributes:

* ``pymeasure_channels()``: ``{channel id: {property: {"doc", "writable"}}}``;
* ``channel_get(channel, name)`` / ``channel_set(channel, name, value)``.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["SERVED", "pymeasure_channels", "channel_get", "channel_set"]


def _channels(instrument: Any) -> dict[str, Any]:
    channels = getattr(instrument, "channels", None)
    return {str(k): v for k, v in channels.items()} if isinstance(channels, dict) else {}


def _property(instrument: Any, channel: str, name: str) -> tuple[Any, property]:
    channels = _channels(instrument)
    if str(channel) not in channels:
        raise KeyError(
            f"no channel {channel!r}; the instrument's channels: "
            f"{', '.join(sorted(channels)) or 'none'}"
        )
    child = channels[str(channel)]
    prop = inspect.getattr_static(type(child), str(name), None)
    if str(name).startswith("_") or not isinstance(prop, property):
        raise AttributeError(f"channel {channel!r} has no property {name!r}")
    return child, prop


def pymeasure_channels(instrument: Any) -> dict[str, dict[str, Any]]:
    """The instrument's channels by id, each with its properties (doc, writable)."""
    out = {}
    for key, child in _channels(instrument).items():
        props = {}
        for name in dir(type(child)):
            prop = inspect.getattr_static(type(child), name, None)
            if not name.startswith("_") and isinstance(prop, property):
                props[name] = {
                    "doc": inspect.cleandoc(prop.__doc__ or ""),
                    "writable": prop.fset is not None,
                }
        out[key] = props
    return out


def channel_get(instrument: Any, channel: str, name: str) -> Any:
    """The value of property ``name`` of channel ``channel``."""
    child, _ = _property(instrument, channel, name)
    return getattr(child, str(name))


def channel_set(instrument: Any, channel: str, name: str, value: Any) -> None:
    """Set property ``name`` of channel ``channel`` to ``value``."""
    child, prop = _property(instrument, channel, name)
    if prop.fset is None:
        raise AttributeError(f"property {name!r} of channel {channel!r} is read-only")
    setattr(child, str(name), value)


#: The methods the pymeasure profile offers besides the instrument's own.
SERVED = {
    "pymeasure_channels": pymeasure_channels,
    "channel_get": channel_get,
    "channel_set": channel_set,
}

"""Property commands: get and set."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from pyroinst.arguments import convert_value

from .app import EXIT_NOT_FOUND, EXIT_USAGE, JsonOpt, app, connect, fail, guard, setup_logging
from .output import emit_result

__all__: list[str] = []

PropertyArg = Annotated[str, typer.Argument(metavar="PROPERTY")]
TimeoutOpt = Annotated[float | None, typer.Option(help="Seconds to wait for the reply.")]


def _property(dev: Any, device: str, prop: str) -> dict[str, Any]:
    found = {p["name"]: p for p in dev.describe()["properties"]}
    if prop not in found:
        raise fail(
            f"device {device!r} has no property {prop!r}; its properties: "
            f"{', '.join(sorted(found)) or 'none'} (methods: pyroinst call)",
            EXIT_NOT_FOUND,
        )
    return found[prop]


def _converted(info: dict[str, Any], device: str, prop: str, value: str) -> Any:
    if not info["writable"]:
        raise fail(f"property {prop!r} of device {device!r} is read-only", EXIT_USAGE)
    try:
        return convert_value(value, info.get("annotation") or "", text=True)
    except ValueError as exc:
        raise fail(
            f"{device}.{prop}={value!r} is not {exc} (the property is {info.get('annotation')})",
            EXIT_USAGE,
        ) from None


def _access(
    device: str, prop: str, timeout: float | None, as_json: bool, value: str | None
) -> None:
    """Read ``prop`` (after writing ``value`` when given) and print what it reads."""
    setup_logging(logging.WARNING)
    try:
        dev = connect(device, timeout)
        info = _property(dev, device, prop)
        if value is not None:
            setattr(dev, prop, _converted(info, device, prop, value))
        now = getattr(dev, prop)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        raise guard(exc) from None
    emit_result(now, None, as_json, {"device": device, "property": prop}, prop)


@app.command("get")
def get_command(
    device: str, prop: PropertyArg, timeout: TimeoutOpt = None, as_json: JsonOpt = False
) -> None:
    """Read a property of a device (`pyroinst info DEV` lists them)."""
    _access(device, prop, timeout, as_json, None)


@app.command("set")
def set_command(
    device: str,
    prop: PropertyArg,
    value: Annotated[str, typer.Argument(help="The new value (converted as the property's type).")],
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a property of a device, then print the value it reads back."""
    _access(device, prop, timeout, as_json, value)

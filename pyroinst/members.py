"""What a driver class offers remotely: its public members, their signatures, describe().

Also the names every device reserves for pyroinst's own members, and the check that
names everything wrong with a call's arguments (``binding_problems``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from .channels import monitor_period

__all__ = [
    "Extra",
    "RESERVED_NAMES",
    "HIDDEN_NAMES",
    "binding_problems",
    "public_members",
    "describe_device",
    "parameters_of",
    "signature_of",
    "function_of",
]

RESERVED_NAMES = frozenset(
    {
        "describe",
        "ping",
        "job_start",
        "job_status",
        "job_wait",
        "job_result",
        "job_cancel",
        "job_list",
        "reserve",
        "release",
        "reservation",
        "job_stream",
        "channel_read",
        "channels",
        "watch",
    }
)
# Never reachable remotely: one client must not shut an instrument for everyone.
HIDDEN_NAMES = frozenset({"close"})


class Extra:
    """A member a driver family's profile adds: ``func(device, *args)`` offered as the
    method ``name`` of the device (see ``pyroinst.offering``)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def bind(self, device: Any) -> Callable[..., Any]:
        """The method as the device's: ``func`` with the device given."""
        # (No __wrapped__: its signature is the method's, without the device.)
        bound = functools.partial(self.func, device)
        bound.__doc__ = self.func.__doc__
        return bound


def _first_line(doc: str | None) -> str:
    return (inspect.cleandoc(doc).splitlines() or [""])[0] if doc else ""


def signature_of(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func, eval_str=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: show them as written
        try:
            return inspect.signature(func)
        except (TypeError, ValueError):
            return None


def binding_problems(sig: inspect.Signature, args: tuple, kwargs: dict) -> list[str]:
    """Everything wrong with calling ``sig`` with ``args`` and ``kwargs``, each named.

    ``Signature.bind`` names only the first problem it meets (often a missing argument,
    when the real mistake is a misspelt keyword): this lists unknown keywords, surplus
    positional arguments, arguments given twice and missing ones.
    """
    params = list(sig.parameters.values())
    kinds = inspect.Parameter
    positional = [
        p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    by_name = {p.name: p for p in params if p.kind != kinds.POSITIONAL_ONLY}
    takes_var_args = any(p.kind == kinds.VAR_POSITIONAL for p in params)
    takes_var_kwargs = any(p.kind == kinds.VAR_KEYWORD for p in params)
    problems = []
    unknown = [k for k in kwargs if k not in by_name or by_name[k].kind == kinds.VAR_POSITIONAL]
    if unknown and not takes_var_kwargs:
        names = ", ".join(repr(k) for k in unknown)
        known = ", ".join(
            n for n, p in by_name.items() if p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
        )
        problems.append(
            f"unknown keyword argument{'s' if len(unknown) > 1 else ''} {names} "
            f"(keywords it takes: {known or 'none'})"
        )
    if len(args) > len(positional) and not takes_var_args:
        problems.append(
            f"takes {len(positional)} positional argument{'s' if len(positional) != 1 else ''}"
            f" but {len(args)} were given"
        )
    filled = {p.name for p in positional[: len(args)]}
    twice = [k for k in kwargs if k in filled and by_name.get(k) is not None]
    if twice:
        problems.append(f"{', '.join(repr(k) for k in twice)} given both by position and by name")
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
        and p.name not in filled
        and p.name not in kwargs
    ]
    if missing:
        problems.append(
            f"missing required argument{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)}"
        )
    return problems


def public_members(cls: type) -> dict[str, Any]:
    """The driver's public methods and properties by name (class attributes, bases included)."""
    members: dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("_") or name in HIDDEN_NAMES:
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, property):
            members[name] = raw
        elif isinstance(raw, staticmethod | classmethod) or inspect.isfunction(raw):
            members[name] = raw
        elif callable(raw) and not isinstance(raw, type):
            members[name] = raw
    return members


def function_of(member: Any) -> Callable[..., Any]:
    if isinstance(member, staticmethod | classmethod):
        return member.__func__
    return member


def _return_annotation(func: Any) -> str:
    """The text of a getter's return annotation ("" if none or unreadable)."""
    try:
        annotation = inspect.signature(func).return_annotation
    except (TypeError, ValueError):
        return ""
    if annotation is inspect.Signature.empty:
        return ""
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


def parameters_of(sig: inspect.Signature | None) -> list[dict[str, Any]]:
    """A method's parameters as plain data (forms are built from them): ``name``, ``kind``
    (positional, positional_or_keyword, var_positional, keyword, var_keyword),
    ``annotation`` (text, "" if none), ``default`` (its repr; None if there is none)."""
    if sig is None:
        return []
    out = []
    for param in sig.parameters.values():
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            text = ""
        elif isinstance(annotation, type):
            text = annotation.__name__
        else:
            text = str(annotation)
        out.append(
            {
                "name": param.name,
                "kind": _KINDS[param.kind],
                "annotation": text,
                "default": None
                if param.default is inspect.Parameter.empty
                else repr(param.default),
            }
        )
    return out


def describe_device(
    device: Any,
    name: str,
    jobs: frozenset[str] = frozenset(),
    concurrent: frozenset[str] = frozenset(),
    members: dict[str, Any] | None = None,
    hidden: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What ``describe()`` returns: class, docstring, methods and properties of ``device``
    (``members``: those it offers; else every public one)."""
    cls = type(device)
    methods = []
    properties = []
    offered = public_members(cls) if members is None else members
    for member_name, member in sorted(offered.items()):
        if isinstance(member, property):
            properties.append(
                {
                    "name": member_name,
                    "doc": inspect.cleandoc(member.__doc__ or ""),
                    "writable": member.fset is not None,
                    "annotation": _return_annotation(member.fget),
                }
            )
            continue
        func = member.bind(device) if isinstance(member, Extra) else getattr(device, member_name)
        sig = signature_of(func)
        doc = inspect.getdoc(func) or ""
        methods.append(
            {
                "name": member_name,
                "signature": f"{member_name}{sig}" if sig is not None else f"{member_name}(...)",
                "doc": doc,
                "summary": _first_line(doc),
                "job": member_name in jobs,
                "concurrent": member_name in concurrent,
                "monitor": monitor_period(function_of(member)),
                "parameters": parameters_of(sig),
            }
        )
    return {
        "name": name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "doc": inspect.getdoc(device) or "",
        "methods": methods,
        "properties": properties,
        "reserved": sorted(RESERVED_NAMES),
        "hidden": dict(sorted((hidden or {}).items())),
    }

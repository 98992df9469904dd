"""Call arguments from people: converted by the method's annotations, refused if they do not fit.

The command line gives every argument as text, a web form mostly as text, the HTTP API as
JSON values. ``convert_arguments`` turns them into what the method's parameters say
(their annotations, as ``describe()`` reports them) before anything is sent to the
device, so ``measure abc`` or ``measure 2.5`` for ``measure(time: int)`` is refused with a
message naming the parameter, instead of failing inside the driver or silently measuring
2 points. What it understands:

* ``int`` (whole numbers; ``1e3`` is 1000, ``2.5`` is refused), ``float``, ``complex``,
  ``bool`` (true/false, yes/no, on/off, 1/0), ``str`` (the text as typed: ``007`` stays
  ``"007"``), ``bytes``, ``Path``/``PathLike`` (sent as the path's text);
* ``list[X]``, ``tuple[X, ...]``, ``set[X]``, ``Sequence[X]`` (a Python literal such as
  ``[1, 2, 3]``, each element converted to X), ``dict`` (a literal);
* ``X | None`` and ``Optional[X]`` (``None`` or X), unions (the first that fits), and
  ``Literal["a", "b"]`` (one of those values);
* anything else (no annotation, ``Any``, an enum or a class the client does not know):
  text is read as a Python literal if it is one (``5``, ``[1, 2]``, ``"x"``), else kept as
  text; JSON values go as they are.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any

from .errors import SignatureError

__all__ = ["convert_arguments", "convert_value", "literal"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_SEQUENCES = {"list", "tuple", "set", "frozenset", "sequence", "iterable", "collection"}
_PATHS = {"path", "purepath", "pathlike", "os.pathlike", "pathlib.path", "pathlib.purepath"}


def literal(text: str) -> Any:
    """A Python literal in ``text`` (numbers, strings, lists, dicts...), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


class _Misfit(ValueError):
    """A value that does not fit an annotation; the text says what was expected."""


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _generic(annotation: str) -> tuple[str, list[str]]:
    """``"list[int]"`` -> ``("list", ["int"])``; ``"int"`` -> ``("int", [])``."""
    match = re.fullmatch(r"([\w.]+)\s*\[(.*)\]", annotation, re.S)
    if not match:
        return annotation, []
    return match.group(1), _split_top(match.group(2), ",")


def _base(name: str) -> str:
    name = name.strip().strip("'\"")
    short = name.lower()
    for prefix in ("typing.", "builtins.", "collections.abc.", "numbers."):
        if short.startswith(prefix):
            short = short[len(prefix) :]
    return short


def convert_value(value: Any, annotation: str, text: bool) -> Any:
    """``value`` (text when ``text``, else a JSON value) as the annotation says.

    ValueError (its message says what was expected) if it does not fit.
    """
    return _convert(value, (annotation or "").strip(), text)


def _convert(value: Any, annotation: str, text: bool) -> Any:
    if not annotation:
        return literal(value) if text and isinstance(value, str) else value
    alternatives = _split_top(annotation, "|")
    name, inner = _generic(annotation)
    base = _base(name)
    if base in ("optional",) and inner:
        alternatives = [inner[0], "None"]
    elif base == "union" and inner:
        alternatives = inner
    if len(alternatives) > 1:
        if "None" in alternatives and (value is None or (text and value == "None")):
            return None
        misfits = []
        for alternative in (a for a in alternatives if a != "None"):
            try:
                return _convert(value, alternative, text)
            except ValueError as exc:
                misfits.append(str(exc))
        raise _Misfit(" or ".join(dict.fromkeys(misfits)))
    if base == "none":
        if value is None or (text and value == "None"):
            return None
        raise _Misfit("None")
    if base == "literal" and inner:
        choices = [literal(choice) for choice in inner]
        got = literal(value) if text and isinstance(value, str) else value
        if got in choices or (text and value in choices):
            return got if got in choices else value
        raise _Misfit("one of " + ", ".join(repr(c) for c in choices))
    if base == "int":
        return _int(value, text)
    if base == "float":
        return _float(value, text)
    if base == "complex":
        return _complex(value, text)
    if base == "bool":
        return _bool(value)
    if base == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _Misfit("text")
    if base == "bytes":
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        raise _Misfit("bytes (text)")
    if base in _PATHS:
        if isinstance(value, str):
            return value
        raise _Misfit("a path (text)")
    if base in _SEQUENCES:
        items = literal(value) if text and isinstance(value, str) else value
        if not isinstance(items, list | tuple | set | frozenset):
            raise _Misfit(f"a list such as [1, 2, 3] (for {annotation})")
        element = inner[0] if inner and inner[0] not in ("...", "Any") else ""
        converted = [_convert(item, element, False) for item in items] if element else list(items)
        if base == "tuple" and len(inner) > 1 and inner[-1] != "...":
            if len(inner) != len(converted):
                raise _Misfit(f"{len(inner)} items (for {annotation})")
            converted = [_convert(v, a, False) for v, a in zip(items, inner, strict=True)]
            return tuple(converted)
        return tuple(converted) if base == "tuple" else converted
    if base in ("dict", "mapping"):
        got = literal(value) if text and isinstance(value, str) else value
        if not isinstance(got, dict):
            raise _Misfit(f"a dict such as {{'a': 1}} (for {annotation})")
        return got
    # Unknown to the client (Any, enums, classes): as given.
    return literal(value) if text and isinstance(value, str) else value


def _int(value: Any, text: bool) -> int:
    if isinstance(value, bool):
        raise _Misfit("a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise _Misfit("a whole number")
    if isinstance(value, str):
        cleaned = value.strip()
        try:
            return int(cleaned, 0)
        except ValueError:
            pass
        try:
            number = float(cleaned)
        except ValueError:
            raise _Misfit("a whole number") from None
        if math.isfinite(number) and number.is_integer():
            return int(number)
        raise _Misfit("a whole number")
    raise _Misfit("a whole number")


def _float(value: Any, text: bool) -> float:
    if isinstance(value, bool):
        raise _Misfit("a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _Misfit("a number") from None
    raise _Misfit("a number")


def _complex(value: Any, text: bool) -> complex:
    if isinstance(value, bool):
        raise _Misfit("a complex number such as 1+2j")
    if isinstance(value, int | float | complex):
        return complex(value)
    if isinstance(value, list) and len(value) == 2:
        return complex(*(_float(v, False) for v in value))
    if isinstance(value, str):
        try:
            return complex(value.strip().replace(" ", ""))
        except ValueError:
            raise _Misfit("a complex number such as 1+2j") from None
    raise _Misfit("a complex number such as 1+2j")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _Misfit("true or false (yes/no, on/off, 1/0)")


def convert_arguments(
    method: dict[str, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    text: bool,
    where: str = "",
) -> tuple[list[Any], dict[str, Any]]:
    """``args``/``kwargs`` converted by the parameters of ``method`` (an entry of
    ``describe()["methods"]``). SignatureError naming the parameter, the value and what
    was expected when one does not fit; arguments the method has no parameter for are
    left to the call's own check (it names the signature)."""
    params = method.get("parameters") or []
    label = where or method.get("name", "method")
    positional = [p for p in params if p["kind"] in ("positional", "positional_or_keyword")]
    var_positional = next((p for p in params if p["kind"] == "var_positional"), None)
    by_name = {p["name"]: p for p in params if p["kind"] in ("positional_or_keyword", "keyword")}
    var_keyword = next((p for p in params if p["kind"] == "var_keyword"), None)

    def one(value: Any, param: dict[str, Any] | None) -> Any:
        annotation = "" if param is None else param.get("annotation") or ""
        try:
            return convert_value(value, annotation, text)
        except ValueError as exc:
            name = "?" if param is None else param["name"]
            raise SignatureError(
                f"{label}: {name}={value!r} is not {exc} (the parameter is {name}: {annotation})",
                method=method.get("name"),
                parameter=name,
            ) from None

    out_args = []
    for i, value in enumerate(args):
        param = positional[i] if i < len(positional) else var_positional
        out_args.append(one(value, param))
    out_kwargs = {}
    for key, value in kwargs.items():
        param = by_name.get(key, var_keyword)
        out_kwargs[key] = one(value, param)
    return out_args, out_kwargs

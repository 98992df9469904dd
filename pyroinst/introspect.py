"""Help for a device at the client: what IPython, ``help()`` and ``inspect`` show.

Everything comes from the device's ``describe()`` (fetched once per proxy, when help is
first asked for; calls never wait for it): each remote method has the driver's
``__doc__`` and an ``inspect.Signature`` (``dev.measure?``, tab completion, ``help``),
a proxy shows its methods and properties as text (``_repr_pretty_``) and HTML
(``_repr_html_``), and a remote exception carries the driver's own frames in its
``__notes__``, so a notebook's traceback shows where in the driver it failed.
"""

from __future__ import annotations

import html
import inspect
import re
from typing import Any

import Pyro5.client

__all__ = ["RemoteMethod", "signature_from", "describe_text", "describe_html", "add_driver_note"]

_KINDS = {
    "positional": inspect.Parameter.POSITIONAL_ONLY,
    "positional_or_keyword": inspect.Parameter.POSITIONAL_OR_KEYWORD,
    "var_positional": inspect.Parameter.VAR_POSITIONAL,
    "keyword": inspect.Parameter.KEYWORD_ONLY,
    "var_keyword": inspect.Parameter.VAR_KEYWORD,
}


class _Text:
    """A default or annotation known only as the text the server sent."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature_from(method: dict[str, Any]) -> inspect.Signature | None:
    """The ``inspect.Signature`` of a method as ``describe()`` gave it (None if unknown)."""
    text = str(method.get("signature") or "")
    if not text or (text.endswith("(...)") and not method.get("parameters")):
        return None
    try:
        params = [
            inspect.Parameter(
                str(p["name"]),
                _KINDS.get(p.get("kind"), inspect.Parameter.POSITIONAL_OR_KEYWORD),
                default=inspect.Parameter.empty
                if p.get("default") is None
                else _Text(str(p["default"])),
                annotation=_Text(str(p["annotation"]))
                if p.get("annotation")
                else inspect.Parameter.empty,
            )
            for p in method.get("parameters") or []
        ]
        returns = text.rpartition(") -> ")[2] if ") -> " in text else None
        return inspect.Signature(
            params,
            return_annotation=inspect.Signature.empty if returns is None else _Text(returns),
        )
    except (KeyError, TypeError, ValueError):
        return None


class RemoteMethod(Pyro5.client._RemoteMethod):
    """A device's method at the client: call it like the driver's own.

    ``__doc__``, ``__signature__`` and ``__name__`` are the driver's (from ``describe()``),
    so ``help()``, ``inspect.signature`` and IPython's ``?`` show them.
    """

    def __init__(self, send: Any, name: str, max_retries: int, proxy: Any) -> None:
        # Pyro5's __init__ in one step (made anew for every attribute access of a method).
        self.__dict__.update(
            {
                "_RemoteMethod__send": send,
                "_RemoteMethod__name": name,
                "_RemoteMethod__max_retries": max_retries,
                "_pyroinst_proxy": proxy,
                "__name__": name,
                "__qualname__": name,
            }
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            # inspect and IPython probe for these (__wrapped__, ...): never remote calls.
            raise AttributeError(name)
        return super().__getattr__(name)

    def _pyroinst_entry(self) -> dict[str, Any]:
        proxy = self.__dict__["_pyroinst_proxy"]
        return proxy._pyroinst_method_info(self.__dict__["__name__"]) or {}

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        entry = self._pyroinst_entry()
        doc = entry.get("doc") or ""
        if entry.get("job"):
            doc = (doc + "\n\n" if doc else "") + (
                "Runs as a job: returns a JobHandle at once (await it, or .result())."
            )
        return doc or None

    @property
    def __signature__(self) -> inspect.Signature | None:
        return signature_from(self._pyroinst_entry())

    def __repr__(self) -> str:
        entry = self._pyroinst_entry()
        what = entry.get("signature") or f"{self.__dict__['__name__']}(...)"
        return f"<remote method {what}{' [job]' if entry.get('job') else ''}>"


def describe_text(description: dict[str, Any], title: str) -> str:
    """A device's methods and properties as plain text (``_repr_pretty_``)."""
    lines = [title]
    doc = (description.get("doc") or "").strip()
    if doc:
        lines.append("  " + doc.splitlines()[0])
    methods = description.get("methods") or []
    if methods:
        lines.append("methods:")
        for m in methods:
            tag = "  [job]" if m.get("job") else ""
            summary = m.get("summary") or ""
            lines.append(f"  {m.get('signature')}{tag}" + (f"  - {summary}" if summary else ""))
    props = description.get("properties") or []
    if props:
        lines.append("properties:")
        for p in props:
            access = "read/write" if p.get("writable") else "read-only"
            lines.append(f"  {p.get('name')} ({access})")
    return "\n".join(lines)


def describe_html(description: dict[str, Any], title: str) -> str:
    """The same as an HTML table (``_repr_html_``); every text is escaped."""
    esc = html.escape
    rows = []
    for m in description.get("methods") or []:
        rows.append(
            "<tr><td><code>{}</code>{}</td><td>{}</td></tr>".format(
                esc(str(m.get("signature"))),
                " <b>job</b>" if m.get("job") else "",
                esc(str(m.get("summary") or "")),
            )
        )
    for p in description.get("properties") or []:
        rows.append(
            "<tr><td><code>{}</code> (property{})</td><td>{}</td></tr>".format(
                esc(str(p.get("name"))),
                "" if p.get("writable") else ", read-only",
                esc(str((p.get("doc") or "").split("\n")[0])),
            )
        )
    doc = esc((description.get("doc") or "").strip().split("\n")[0])
    return f"<div><b>{esc(title)}</b><br><i>{doc}</i><table>{''.join(rows)}</table></div>"


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+, in (?P<func>.+)$')
_FRAMEWORK = ("/Pyro5/", "/pyroinst/", "/concurrent/futures/", "/threading.py")


def add_driver_note(exc: BaseException) -> None:
    """Put the driver's frames of a remote exception's traceback into its ``__notes__``
    (once), so a notebook shows where in the driver it failed."""
    remote = getattr(exc, "_pyroTraceback", None)
    if not remote or getattr(exc, "_pyroinst_noted", False):
        return
    own = getattr(exc, "remote_traceback", "")  # a RemoteError's: the driver's exception
    lines = ((own if isinstance(own, str) else "") + "".join(remote)).splitlines()
    kept: list[str] = []
    for i, line in enumerate(lines):
        match = _FRAME.match(line)
        if match and not any(part in match["file"] for part in _FRAMEWORK):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            frame = line.rstrip()
            if nxt.startswith("    ") and not _FRAME.match(nxt):
                frame += "\n" + nxt.rstrip()
            if frame not in kept:  # a job's traceback comes both ways
                kept.append(frame)
    try:
        exc._pyroinst_noted = True  # type: ignore[attr-defined]
        if kept:
            exc.add_note("Raised in the driver, on the device's server:\n" + "\n".join(kept))
    except (AttributeError, TypeError):
        pass  # an exception type that takes no attributes: its remote traceback stays

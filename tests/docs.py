"""The README and the reference pages in docs/: their text and their marked code blocks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def text() -> str:
    """The README and every docs/ page, one after the other."""
    return "\n\n".join(page.read_text() for page in PAGES)


def page(name: str) -> str:
    """One page: ``README.md`` or a docs/ page by its file name."""
    path = ROOT / name if name == "README.md" else ROOT / "docs" / name
    return path.read_text()


def block(marker: str, lang: str = "python") -> str:
    """The code block right after ``<!-- marker -->``, wherever it is (exactly one)."""
    found = re.findall(rf"<!-- {re.escape(marker)} -->\s*```{lang}\n(.*?)```", text(), re.S)
    assert len(found) == 1, f"the docs hold {len(found)} '{marker}' examples, not one"
    return found[0]

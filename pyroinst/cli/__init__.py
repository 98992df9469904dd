"""The ``pyroinst`` command: run name servers and device servers, poke at devices.

Thin commands over the library, by concern: ``app`` (the typer app, global options,
errors and exit codes), ``servers`` (``ns``, ``serve``), ``devices`` (``list``, ``info``,
``call``, ``reserve``, ``release``, ``ping``), ``jobs`` (``jobs``, ``job``),
``properties`` (``get``, ``set``), ``live`` (``call
--follow``, ``watch``), ``audit`` (an audit log as a table), ``web`` (the dashboard),
``service`` (systemd units) and ``output`` (tables, JSON, progress, files). The exit
codes are listed in ``pyroinst --help`` and in ``app``.
"""

from __future__ import annotations

from . import audit as _audit  # noqa: F401 - registers the commands
from . import devices as _devices  # noqa: F401 - registers the commands
from . import jobs as _jobs  # noqa: F401 - registers the commands
from . import live as _live  # noqa: F401 - registers the commands
from . import properties as _properties  # noqa: F401 - registers the commands
from . import servers as _servers  # noqa: F401 - registers the commands
from . import service as _service  # noqa: F401 - registers the commands
from . import tokens as _tokens  # noqa: F401 - registers the commands
from . import web as _web  # noqa: F401 - registers the commands
from .app import app
from .devices import parse_call_args

__all__ = ["app", "main", "parse_call_args"]


def main() -> None:
    """Console-script entry point."""
    app()

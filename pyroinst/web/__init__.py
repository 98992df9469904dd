"""The lab in a browser: a live dashboard and an HTTP API (``pyroinst web``).

Needs the extra ``pyroinst[web]`` (FastAPI and uvicorn). The web server is a client of
the lab, like the CLI: it finds the name server and presents the lab's token the same
way, and can run on any PC. ``create_app`` builds the ASGI application; ``WebServer``
runs it with uvicorn in a thread (what tests and scripts use); ``pyroinst web`` in the
foreground.
"""

from __future__ import annotations

__all__ = ["create_app", "WebServer"]


def __getattr__(name: str):  # noqa: ANN202 - lazy: FastAPI is an optional extra
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "WebServer":
        from .runner import WebServer

        return WebServer
    raise AttributeError(name)

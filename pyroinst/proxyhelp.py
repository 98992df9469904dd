"""What a DeviceProxy tells people about its device: help, repr, IPython and notebooks.

``dir()`` and tab completion list the device's methods, ``repr`` says where the device
is, IPython and notebooks show its description (``describe()``, fetched once), and a
member the device does not offer gets an error that says why. None of it waits long: a
frozen server leaves the help short (``HELP_TIMEOUT``), not the notebook.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .introspect import describe_html, describe_text

__all__ = ["ProxyHelp", "HELP_TIMEOUT"]

log = logging.getLogger(__name__)

#: Seconds a proxy's help (describe) may take before it shows what it knows without it.
HELP_TIMEOUT = 5.0


class ProxyHelp:
    """DeviceProxy's help for people (a mixin: it uses the proxy's connections, its
    ``_pyroInvoke`` and ``_pyroinst_connect``)."""

    def _pyroinst_not_offered(self, name: str) -> AttributeError:
        """The error for a member the device does not offer: why, if it is hidden."""
        hidden = (self._pyroinst_description() or {}).get("hidden") or {}
        if name in hidden:
            return AttributeError(
                f"{name!r} of {self._pyroinst_label()} is not offered to clients: "
                f"{hidden[name]}. The lab can offer it: expose = [{name!r}] in the "
                "device's lab-file table, or add_device(..., expose=[...])."
            )
        return AttributeError(
            f"{self._pyroinst_label()} has no method or property {name!r}; "
            "dev.describe() lists what it offers"
        )

    def _pyroinst_description(self) -> dict[str, Any] | None:
        """The device's ``describe()``, fetched once (None if it cannot be had quickly)."""
        cached = self.__dict__.get("_pyroinst_described")
        if cached is not None:
            return cached
        slot = self._pyroinst_conns.slot()
        saved = slot.timeout
        own = self._pyroTimeout
        # Help never waits long: a frozen server leaves the help short, not the notebook.
        slot.timeout = HELP_TIMEOUT if own is None else min(own, HELP_TIMEOUT)
        try:
            description = self._pyroInvoke("describe", (), {})
        except Exception as exc:  # noqa: BLE001 - help degrades to what is known
            log.debug("describe() of %s for help failed: %s", self._pyroinst_label(), exc)
            return None
        finally:
            slot.timeout = saved
        if isinstance(description, dict):
            object.__setattr__(self, "_pyroinst_described", description)
            return description
        return None

    def _pyroinst_method_info(self, name: str) -> dict[str, Any] | None:
        description = self._pyroinst_description() or {}
        for method in description.get("methods") or []:
            if method.get("name") == name:
                return method  # type: ignore[no-any-return]
        return None

    def __dir__(self) -> list[str]:
        if not self._pyroMethods and not self._pyroAttrs:
            # Tab completion asks before any call: learn the methods (briefly).
            conns = self._pyroinst_conns
            slot = conns.enter()
            try:
                self._pyroinst_connect(time.monotonic() + HELP_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - completion shows what is known
                log.debug("no methods of %s for dir(): %s", self._pyroinst_label(), exc)
            finally:
                conns.leave(slot)
        return super().__dir__()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        what = f"device {self._pyroinst_name!r}" if self._pyroinst_name else "device"
        uri = self._pyroUri
        where = getattr(uri, "location", None) or str(uri)
        state = []
        conns = self._pyroinst_conns
        opened = conns.open_connections()
        state.append(f"{opened} connection{'s' if opened != 1 else ''} open")
        if self._pyroinst_lease:
            state.append(f"reserved by {self._pyroinst_owner}")
        return f"<DeviceProxy {what} on server {where} ({uri.object}); {', '.join(state)}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's display: the device, its server, its methods and properties."""
        if cycle:
            printer.text(repr(self))
            return
        description = self._pyroinst_description()
        if description is None:
            printer.text(repr(self) + "\n(its description could not be had now)")
        else:
            printer.text(describe_text(description, repr(self)))

    def _repr_html_(self) -> str | None:
        """A notebook's display: the same as an HTML table."""
        description = self._pyroinst_description()
        return None if description is None else describe_html(description, repr(self))

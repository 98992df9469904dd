"""Where the name server is, and what the name server says: used by servers and clients.

Where the name server is, for every helper here: the explicit ``ns_host``/``ns_port``
arguments, else the ``PYROINST_NS_HOST``/``PYROINST_NS_PORT`` environment variables, else
Pyro5's own configuration (``Pyro5.config.NS_HOST``/``NS_PORT``, i.e. ``PYRO_NS_HOST``...)
and its broadcast lookup. With the lab's token there is no broadcast lookup unless
``PYROINST_NS_BROADCAST=1`` asks for one: anyone on the network can answer a broadcast,
and even then the name server found must prove the token before anything is sent to it.
"""

from __future__ import annotations

import os

import Pyro5.client
import Pyro5.core
import Pyro5.errors
from Pyro5 import config as pyro_config

from .auth import broadcast_allowed, require_client_side
from .errors import AuthenticationFailed, ConfigurationError, DeviceNotFound, NameServerNotFound
from .tokens import current_token, token_problem, use_token

__all__ = [
    "DEVICE_TAG",
    "CLASS_TAG",
    "HOST_TAG",
    "SERVER_TAG",
    "NS_TIMEOUT",
    "ns_address",
    "describe_ns_address",
    "locate_ns",
    "ns_location",
    "lookup",
]

DEVICE_TAG = "pyroinst.device"
CLASS_TAG = "pyroinst.class:"
HOST_TAG = "pyroinst.host:"
SERVER_TAG = "pyroinst.server:"

#: Seconds a name-server connection may take before it counts as unreachable.
NS_TIMEOUT = 5.0


def ns_address(
    ns_host: str | None = None, ns_port: int | None = None
) -> tuple[str | None, int | None]:
    """The name server address to use: arguments, else PYROINST_NS_HOST/PORT, else (None, None).

    ``None`` means "whatever Pyro5's configuration and broadcast find".
    """
    host = ns_host or os.environ.get("PYROINST_NS_HOST") or None
    port = ns_port
    if port is None:
        env = os.environ.get("PYROINST_NS_PORT")
        if env:
            try:
                port = int(env)
            except ValueError:
                raise ConfigurationError(f"PYROINST_NS_PORT={env!r} is not a port number") from None
    return host, port


def describe_ns_address(host: str | None, port: int | None) -> str:
    """Human-readable form of an address as ``ns_address`` returns it."""
    if host is None:
        where = f"{pyro_config.NS_HOST}:{port or pyro_config.NS_PORT} (Pyro5 config)"
        if broadcast_allowed():
            return f"{where} or by broadcast"
        return (
            f"{where}; no broadcast with the lab's token (an answer to one cannot be "
            "trusted): set PYROINST_NS_HOST"
        )
    return f"{host}:{port or pyro_config.NS_PORT}"


def refuse_marshal(serializer: str | None = None) -> None:
    """ConfigurationError if pyroinst would speak marshal (its servers refuse it)."""
    if (serializer or pyro_config.SERIALIZER) == "marshal":
        raise ConfigurationError(
            "the marshal serializer is refused by pyroinst servers (decoding marshal from "
            "the network is unsafe): unset PYRO_SERIALIZER, or choose msgpack, serpent or "
            "json"
        )


def locate_ns(
    ns_host: str | None = None,
    ns_port: int | None = None,
    timeout: float = NS_TIMEOUT,
    token: str | None = None,
) -> Pyro5.client.Proxy:
    """A bound name-server proxy; NameServerNotFound (saying how to start one) if none answers.

    ``token``: the lab's token to present (default: this process's, see pyroinst.auth).
    """
    host, port = ns_address(ns_host, ns_port)
    require_client_side(token or current_token())
    refuse_marshal()
    try:
        if host is None:
            ns = Pyro5.core.locate_ns(port=port, broadcast=broadcast_allowed(token))
        else:
            ns = Pyro5.client.Proxy(
                f"PYRO:{Pyro5.core.NAMESERVER_NAME}@{host}:{port or pyro_config.NS_PORT}"
            )
        if token is not None:
            use_token(ns, token)
        ns._pyroTimeout = timeout
        ns._pyroBind()
    except AuthenticationFailed as exc:
        raise AuthenticationFailed(
            f"the name server at {describe_ns_address(host, port)}: {exc}",
            address=describe_ns_address(host, port),
            reason=getattr(exc, "reason", "refused"),
        ) from None
    except (Pyro5.errors.CommunicationError, Pyro5.errors.NamingError) as exc:
        where = describe_ns_address(host, port)
        if "authentication failed" in str(exc):
            raise AuthenticationFailed(
                token_problem(f"the name server at {where}", token, str(exc)),
                address=where,
                reason="refused",
            ) from None
        raise NameServerNotFound(
            f"no name server answered at {where}: {exc}. Start one with `pyroinst ns` "
            "(or ./nameserver.sh, or a server that embeds one), or point to it with "
            "--ns-host/--ns-port or PYROINST_NS_HOST/PYROINST_NS_PORT.",
            address=where,
        ) from None
    except OSError as exc:
        # Pyro5's broadcast lookup sends UDP: with no route for it (a PC with only
        # loopback, a namespace, a firewall) sendto raises instead of timing out.
        where = describe_ns_address(host, port)
        raise NameServerNotFound(
            f"could not look for a name server at {where}: {exc.strerror or exc} (no "
            "network route for a broadcast). Give its address: --ns-host/--ns-port or "
            "PYROINST_NS_HOST/PYROINST_NS_PORT.",
            address=where,
        ) from None
    return ns


def ns_location(ns: Pyro5.client.Proxy) -> str:
    uri = ns._pyroUri
    return f"{uri.host}:{uri.port}"


def lookup(name: str, ns_host: str | None = None, ns_port: int | None = None) -> str:
    """The URI of the device ``name`` (DeviceNotFound naming the name server and what it has)."""
    with locate_ns(ns_host, ns_port) as ns:
        try:
            return str(ns.lookup(name))
        except Pyro5.errors.NamingError:
            known = sorted(ns.yplookup(meta_all={DEVICE_TAG}, return_metadata=False))
            raise DeviceNotFound(
                f"no device {name!r} in the name server at {ns_location(ns)}; "
                f"devices there: {', '.join(known) if known else 'none'}",
                device=name,
            ) from None

"""TLS for every pyroinst connection, through Pyro5's SSL support.

Pyro5 keeps its SSL settings per process: once ``configure_tls()`` ran, every daemon
this process starts (device servers, name servers) and every proxy it creates use TLS.
A lab therefore turns TLS on everywhere at once: name server, device servers, clients.

One certificate per PC, signed by the lab's CA, serves as that PC's server certificate
and, for mutual TLS, as its client certificate. Settings: ``configure_tls(ca, cert, key,
require_client_cert)``; the environment variables ``PYROINST_TLS_CA``,
``PYROINST_TLS_CERT``, ``PYROINST_TLS_KEY``, ``PYROINST_TLS_REQUIRE_CLIENT_CERT`` (read when
pyroinst is imported); the lab file's ``[server] tls_ca``, ``tls_cert``, ``tls_key``,
``tls_require_client_cert``; the CLI's ``--tls-ca``, ``--tls-cert``, ``--tls-key``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from Pyro5 import config as pyro_config

from .errors import ConfigurationError

__all__ = ["configure_tls", "tls_enabled", "configure_from_environment"]

log = logging.getLogger(__name__)


def _existing(path: str | os.PathLike | None, what: str) -> str:
    if not path:
        return ""
    if not Path(path).is_file():
        raise ConfigurationError(f"the TLS {what} file {str(path)!r} does not exist")
    return str(path)


def configure_tls(
    ca: str | os.PathLike,
    cert: str | os.PathLike | None = None,
    key: str | os.PathLike | None = None,
    require_client_cert: bool = False,
) -> None:
    """Use TLS for all of this process's connections.

    ``ca``: the lab CA's certificate (servers' certificates are checked against it, and
    so are clients' with ``require_client_cert``); ``cert``/``key``: this PC's
    certificate and key (needed to serve; as a client, needed where servers require
    client certificates).
    """
    pyro_config.SSL = True
    pyro_config.SSL_CACERTS = _existing(ca, "CA")
    pyro_config.SSL_SERVERCERT = pyro_config.SSL_CLIENTCERT = _existing(cert, "certificate")
    pyro_config.SSL_SERVERKEY = pyro_config.SSL_CLIENTKEY = _existing(key, "key")
    pyro_config.SSL_REQUIRECLIENTCERT = bool(require_client_cert)
    log.info(
        "TLS on (CA %s, certificate %s, client certificates %s)",
        ca,
        cert or "none",
        "required" if require_client_cert else "not required",
    )


def tls_enabled() -> bool:
    """True once TLS is configured for this process."""
    return bool(pyro_config.SSL)


def configure_from_environment() -> None:
    """Apply PYROINST_TLS_* if PYROINST_TLS_CA is set."""
    ca = os.environ.get("PYROINST_TLS_CA")
    if ca:
        configure_tls(
            ca,
            os.environ.get("PYROINST_TLS_CERT") or None,
            os.environ.get("PYROINST_TLS_KEY") or None,
            os.environ.get("PYROINST_TLS_REQUIRE_CLIENT_CERT", "").lower() in ("1", "yes", "true"),
        )

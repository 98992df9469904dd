"""A server's TLS identity, and the channel binding that ties the token's proofs to it.

With the lab's token, every connection runs TLS. A server without a lab CA uses a
self-signed certificate it makes once (ECDSA P-256, signed with SHA-256) and keeps in its
state folder (``PYROINST_STATE_DIR``, else systemd's ``STATE_DIRECTORY``, else
``$XDG_STATE_HOME/pyroinst``, else ``~/.local/state/pyroinst``), as ``identity.pem``
(key and certificate, readable by its owner only). Where that folder cannot be written,
a certificate is made at start and kept in memory for the process's life.

A client does not check a chain of trust for such a certificate: it binds its proof of the
token to the certificate it saw (``binding``: the ``tls-server-end-point`` channel
binding of RFC 5929, the hash of the certificate's DER bytes with the hash of its
signature, SHA-256 for MD5 and SHA-1), and the server binds its proof to its own. A relay
that ends the TLS connection itself shows the client another certificate, so neither
proof verifies; a relay that does not end it can neither read nor change the traffic.
With a lab CA (``configure_tls``), the CA-signed certificate is checked as before and
the proofs are bound to it the same way.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .errors import ConfigurationError

__all__ = [
    "Identity",
    "binding",
    "client_context",
    "server_identity",
    "state_dir",
    "identity_from_files",
]

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.pem"
_VALID_DAYS = 3650


def state_dir() -> Path:
    """The folder a server keeps its state in (see the module docstring)."""
    for variable in ("PYROINST_STATE_DIR", "STATE_DIRECTORY"):
        value = os.environ.get(variable)
        if value:
            # systemd may list several folders, separated by colons: the first is ours.
            return Path(value.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pyroinst"


def binding(der: bytes) -> bytes:
    """The ``tls-server-end-point`` channel binding (RFC 5929) of a DER certificate."""
    try:
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    except ValueError:
        algorithm = None
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return digest.finalize()


@dataclass(frozen=True)
class Identity:
    """A server's certificate: its TLS context, DER bytes and channel binding."""

    context: ssl.SSLContext
    der: bytes
    binding: bytes
    where: str

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate, hex (what the name server's metadata records)."""
        digest = hashes.Hash(hashes.SHA256())
        digest.update(self.der)
        return digest.finalize().hex()


def _server_context(pem_file: str, key_file: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pem_file, key_file)
    # No session tickets: nothing resumes a session here, and the tickets would be one
    # more small write right after the handshake (with Nagle, a delayed answer).
    context.num_tickets = 0
    return context


def _make_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pyroinst {socket.gethostname()}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def _der_of(pem: bytes, where: str) -> bytes:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ConfigurationError(f"the certificate in {where} cannot be read: {exc}") from None
    return cert.public_bytes(serialization.Encoding.DER)


def _from_pem(pem: bytes, where: str) -> Identity:
    der = _der_of(pem, where)
    # ssl loads certificates from files only: a private temporary one, removed at once.
    with tempfile.NamedTemporaryFile(prefix="pyroinst-identity-", suffix=".pem") as tmp:
        os.chmod(tmp.name, 0o600)
        tmp.write(pem)
        tmp.flush()
        context = _server_context(tmp.name)
    return Identity(context, der, binding(der), where)


def identity_from_files(cert: str, key: str | None = None) -> Identity:
    """The identity in a certificate file (and key file): ConfigurationError, naming the
    file, when either cannot be read or does not fit."""
    try:
        pem = Path(cert).read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"the TLS certificate file {cert!r} cannot be read: {exc.strerror}"
        ) from None
    der = _der_of(pem, repr(cert))
    try:
        context = _server_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"the TLS certificate {cert!r} (key {key or cert!r}) cannot be used: {exc}"
        ) from None
    return Identity(context, der, binding(der), cert)


_lock = threading.Lock()
_cached: dict[str, Identity] = {}


def server_identity() -> Identity:
    """This PC's self-signed identity (made once, kept in the state folder; see above).

    A stored file that cannot be read or used is replaced by a new one (logged); a folder
    that cannot be written gives an identity for this process only (logged).
    """
    folder = state_dir()
    path = folder / IDENTITY_FILE
    with _lock:
        cached = _cached.get(str(path))
        if cached is not None:
            return cached
        identity = None
        try:
            der = _der_of(path.read_bytes(), str(path))
            identity = Identity(_server_context(str(path)), der, binding(der), str(path))
        except FileNotFoundError:
            pass
        except (OSError, ConfigurationError, ssl.SSLError, ValueError) as exc:
            log.warning("the TLS identity %s cannot be used (%s): making a new one", path, exc)
        if identity is None:
            pem = _make_pem()
            identity = _from_pem(pem, "memory")
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd, tmp = tempfile.mkstemp(prefix=".identity-", dir=folder)
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
                os.replace(tmp, path)  # atomic: two servers starting at once keep one each
                identity = Identity(identity.context, identity.der, identity.binding, str(path))
                log.info("made this PC's TLS identity %s", path)
            except OSError as exc:
                log.warning(
                    "cannot keep this PC's TLS identity in %s (%s): using one made for this "
                    "process (set PYROINST_STATE_DIR to a folder it may write)",
                    folder,
                    exc.strerror,
                )
        _cached[str(path)] = identity
        return identity


def client_context() -> ssl.SSLContext:
    """The TLS context of a client that proves the token: no chain check (the proof is
    bound to the certificate instead), TLS 1.2 at least."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context

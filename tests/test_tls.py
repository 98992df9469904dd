"""TLS with a server certificate, and mutual TLS refusing a client without one.

Pyro5's SSL settings are per process, so servers and clients run in their own processes;
the certificates are made here with openssl (a lab CA, a server and a client certificate).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import clean_env, start_fuzz_target

ROOT = Path(__file__).resolve().parent.parent

CLIENT = """
import sys, pyroinst
ns_port = int(sys.argv[1])
try:
    dev = pyroinst.connect("dev", "127.0.0.1", ns_port, reconnect_timeout=1)
    print("OK", dev.echo("tls"), dev.big(100000).result(10).shape[0])
except Exception as exc:
    print("ERR", type(exc).__name__, exc)
"""


def openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=lab-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
            cwd=d,
        )
    return d


def serve(certs: Path, require_client_cert: bool):
    env = clean_env(
        PYROINST_TLS_CA=str(certs / "ca.pem"),
        PYROINST_TLS_CERT=str(certs / "server.pem"),
        PYROINST_TLS_KEY=str(certs / "server.key"),
        PYROINST_TLS_REQUIRE_CLIENT_CERT="1" if require_client_cert else "",
    )
    proc, (ns_port, _) = start_fuzz_target(env)
    return proc, ns_port


def client(ns_port: str, script: str = CLIENT, **tls: str) -> str:
    """What ``script`` (given ``ns_port``, or another argument) prints in a process with
    the ``tls`` environment."""
    done = subprocess.run(
        [sys.executable, "-c", script, ns_port],
        cwd=ROOT,
        env=clean_env(**tls),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() + done.stderr[-300:]


def test_server_certificate(certs):
    proc, ns_port = serve(certs, require_client_cert=False)
    try:
        answer = client(ns_port, PYROINST_TLS_CA=str(certs / "ca.pem"))
        assert answer.startswith("OK tls 100000"), answer
        plain = client(ns_port)  # no TLS: cannot talk to a TLS name server
        assert plain.startswith("ERR"), plain
    finally:
        proc.stdin.close()
        proc.wait(30)
        Path(proc.log).unlink()


def test_mutual_tls_refuses_a_client_without_certificate(certs):
    proc, ns_port = serve(certs, require_client_cert=True)
    try:
        without = client(ns_port, PYROINST_TLS_CA=str(certs / "ca.pem"))
        assert without.startswith("ERR"), without
        with_cert = client(
            ns_port,
            PYROINST_TLS_CA=str(certs / "ca.pem"),
            PYROINST_TLS_CERT=str(certs / "client.pem"),
            PYROINST_TLS_KEY=str(certs / "client.key"),
        )
        assert with_cert.startswith("OK tls 100000"), with_cert
    finally:
        proc.stdin.close()
        proc.wait(30)
        Path(proc.log).unlink()


RESTART = """
import sys, pyroinst
from pyroinst import EmbeddedNameServer, InstServer
from tests.helpers import Echo
with EmbeddedNameServer("127.0.0.1", 0) as ns:
    first = InstServer(ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    first.add_device(Echo(), "dev")
    first.start()
    port = int(first.location.rsplit(":", 1)[1])
    dev = pyroinst.connect("dev", ns.host, ns.port)
    assert dev.echo("before") == "before"
    first.stop()
    again = InstServer(port=port, ns_host=ns.host, ns_port=ns.port, heartbeat=0)
    again.add_device(Echo(), "dev")
    with again:
        try:
            print("OK", dev.echo("after"))  # the idle TLS connection was closed: reconnect
        except Exception as exc:
            print("ERR", type(exc).__name__, exc)
        dev._pyroRelease()
"""


def test_tls_proxy_reconnects_quietly_after_its_server_restarts(certs):
    done = subprocess.run(
        [sys.executable, "-c", RESTART],
        cwd=ROOT,
        env=clean_env(
            PYROINST_TLS_CA=str(certs / "ca.pem"),
            PYROINST_TLS_CERT=str(certs / "server.pem"),
            PYROINST_TLS_KEY=str(certs / "server.key"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "OK after", done.stdout + done.stderr[-2000:]


TOKEN_CLIENT = """
import sys, pyroinst
try:
    dev = pyroinst.DeviceProxy(sys.argv[1])
    dev._pyroTimeout = 10
    print("OK", dev.echo("tls and token"))
except Exception as exc:
    print("ERR", type(exc).__name__, exc)
"""


def test_a_lab_ca_and_a_token_bind_the_proofs_to_the_ca_certificates(certs):
    """With a lab CA and a token, a relay holding another valid certificate of the lab
    (here the client's, signed by the same CA) passes the CA check, but not the proofs:
    they are bound to the certificate the client saw."""
    from tests.mitm import TamperingRelay

    token = "ca-and-token-0123456789abcdef"
    env = clean_env(
        PYROINST_TOKEN=token,
        PYROINST_TLS_CA=str(certs / "ca.pem"),
        PYROINST_TLS_CERT=str(certs / "server.pem"),
        PYROINST_TLS_KEY=str(certs / "server.key"),
    )
    proc, (_, uri) = start_fuzz_target(env)
    location = uri.rsplit("@", 1)[1]
    host, port = location.rsplit(":", 1)
    tls = {"PYROINST_TLS_CA": str(certs / "ca.pem"), "PYROINST_TOKEN": token}

    def run(target: str) -> str:
        return client(target, TOKEN_CLIENT, **tls)

    try:
        assert run(uri).startswith("OK tls and token"), run(uri)
        lab_cert = (str(certs / "client.pem"), str(certs / "client.key"))
        with TamperingRelay((host, int(port)), terminate=True, cert=lab_cert) as relay:
            answer = run(f"PYRO:dev@{relay.address}")
        assert answer.startswith("ERR AuthenticationFailed"), answer
        assert "certificate" in answer
    finally:
        proc.stdin.close()
        proc.wait(30)
        Path(proc.log).unlink()

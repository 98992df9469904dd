"""With the lab's token a broadcast answer is never trusted: none is sent unless asked for,
and the name server it finds must prove itself before anything is sent to it.

Runs in a network namespace of its own (its broadcasts cannot leave it): an impostor there
answers every broadcast with the address of a plain Pyro5 name server that has no token.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, clean_env
from tests.netns import Namespace, namespaces_unavailable

ADDRESS = "10.77.0.1"

SCRIPT = r"""
import json, os, socket, threading
import Pyro5.api, Pyro5.nameserver, Pyro5.errors
import pyroinst

asked = []
ns_uri, ns_daemon, _ = Pyro5.nameserver.start_ns(host="ADDRESS", port=0, enableBroadcast=False)
threading.Thread(target=ns_daemon.requestLoop, daemon=True).start()
responder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
responder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
responder.bind(("", 9091))


def answer():
    while True:
        data, peer = responder.recvfrom(100)
        asked.append(data.decode())
        responder.sendto(str(ns_uri).encode(), peer)


threading.Thread(target=answer, daemon=True).start()
results = {}


def attempt(label, env):
    os.environ.pop("PYROINST_NS_BROADCAST", None)
    os.environ.pop("PYROINST_NS_HOST", None)
    os.environ.pop("PYROINST_NS_PORT", None)
    os.environ.update(env)
    before = len(asked)
    try:
        pyroinst.connect("dev", timeout=5).ping()
        outcome = "connected"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    results[label] = {"outcome": outcome, "broadcasts": len(asked) - before}


pyroinst.set_token("broadcast-lab-token-0123456789")
attempt("token", {})
attempt("token, PYROINST_NS_HOST", {"PYROINST_NS_HOST": "127.0.0.1", "PYROINST_NS_PORT": "9"})
attempt("token, broadcast asked for", {"PYROINST_NS_BROADCAST": "1"})
pyroinst.set_token(None)
attempt("no token", {})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def outcomes():
    why = namespaces_unavailable()
    if why:
        pytest.skip(why)
    with Namespace(f"{ADDRESS}/24") as ns:
        subprocess.run(
            ["ip", "-n", ns.name, "route", "add", "default", "dev", "eth0"],
            check=True,
            capture_output=True,
        )
        proc = subprocess.run(
            ns.command(sys.executable, "-c", SCRIPT.replace("ADDRESS", ADDRESS)),
            env=clean_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_impostor_answers_broadcasts_of_a_client_without_a_token(outcomes):
    # The setup works: a client without a token broadcasts and finds the impostor.
    plain = outcomes["no token"]
    assert plain["broadcasts"] >= 1, plain


def test_with_a_token_nothing_is_broadcast(outcomes):
    found = outcomes["token"]
    assert found["broadcasts"] == 0, found
    assert found["outcome"].startswith("NameServerNotFound"), found
    assert "PYROINST_NS_HOST" in found["outcome"]
    explicit = outcomes["token, PYROINST_NS_HOST"]
    assert explicit["broadcasts"] == 0, explicit


def test_a_broadcast_asked_for_still_needs_the_name_server_to_prove_itself(outcomes):
    asked = outcomes["token, broadcast asked for"]
    assert asked["broadcasts"] >= 1, asked
    assert asked["outcome"].startswith("AuthenticationFailed"), asked
    assert "could not prove it belongs to the lab" in asked["outcome"]

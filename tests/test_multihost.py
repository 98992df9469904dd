"""Several hosts for real: network namespaces joined by veth pairs to a bridge.

Host A runs the name server, B and C device servers (bound to all interfaces), D the
clients. Addresses are private and exist only inside the namespaces this test creates
and removes. Skipped, with the reason, where namespaces cannot be made (not root, no
``ip``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.netns import namespaces_unavailable

ROOT = Path(__file__).resolve().parent.parent
SUBNET = "10.213.77"
HOSTS = {"a": 1, "b": 2, "c": 3, "d": 4}

CLIENT = """
import sys, pyroinst
ns_host, ns_port = sys.argv[1], int(sys.argv[2])
proxies = {}
for line in sys.stdin:
    name = line.strip()
    try:
        if name not in proxies:
            proxies[name] = pyroinst.connect(name, ns_host, ns_port, reconnect_timeout=3)
        proxy = proxies[name]
        job = proxy.job_start("big", 1000)
        result = job.result(30)
        print("OK", proxy.echo(name), result.shape[0], flush=True)
    except Exception as exc:
        print("ERR", type(exc).__name__, str(exc).replace(chr(10), " "), flush=True)
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


class Lab:
    """Namespaces hub (a bridge) and one per host, each host with one veth to the hub."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.hub = f"pyi{tag}-hub"
        self.ns = {h: f"pyi{tag}-{h}" for h in HOSTS}
        self.procs: list[subprocess.Popen] = []
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYRO_", "PYROINST_")) or k == "PYROINST_STATE_DIR"
        }
        self.env["PYTHONPATH"] = str(ROOT)

    def sh(self, *args: str) -> None:
        done = _run(*args)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")

    def up(self) -> None:
        self.sh("ip", "netns", "add", self.hub)
        self.sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        self.sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for host, number in HOSTS.items():
            ns = self.ns[host]
            self.sh("ip", "netns", "add", ns)
            self.sh("ip", "-n", ns, "link", "set", "lo", "up")
            self.sh(
                "ip",
                "-n",
                ns,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                f"v{host}",
                "netns",
                self.hub,
            )
            self.sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{number}/24", "dev", "eth0")
            self.sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self.sh("ip", "-n", self.hub, "link", "set", f"v{host}", "master", "br0")
            self.sh("ip", "-n", self.hub, "link", "set", f"v{host}", "up")

    def down(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for ns in [*self.ns.values(), self.hub]:
            _run("ip", "netns", "del", ns)

    def address(self, host: str) -> str:
        return f"{SUBNET}.{HOSTS[host]}"

    def popen(self, host: str, *args: str, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            text=True,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def run(self, host: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns[host], sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def lab():
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    lab = Lab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def test_lab_of_four_hosts(lab):
    ns_host = lab.address("a")
    ns_port = str(random.randint(20000, 60000))
    ns_args = ("-m", "pyroinst", "ns", "--host", ns_host, "--port", ns_port)

    def start_ns():
        return lab.popen("a", *ns_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def start_server(host, *extra):
        proc = lab.popen(
            host,
            "-m",
            "tests.serve_helper",
            ns_host,
            ns_port,
            "--host",
            "0.0.0.0",
            "--prefix",
            f"{host}_",
            "--heartbeat",
            "0.5",
            *extra,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        line = proc.stdout.readline()
        assert line.startswith("READY"), proc.stderr.read()
        return proc

    def listing():
        done = lab.run(
            "d", "-m", "pyroinst", "--ns-host", ns_host, "--ns-port", ns_port, "list", "--json"
        )
        return json.loads(done.stdout) if done.returncode == 0 else None

    name_server = start_ns()
    wait_until(lambda: listing() is not None, timeout=30, interval=0.2)
    server_b = start_server("b")  # advertises its address towards the name server
    start_server("c", "--advertise", lab.address("c"))

    devices = {d["name"]: d for d in listing()}
    assert {"b_dev", "b_echo", "c_dev", "c_echo"} <= set(devices)
    assert devices["b_echo"]["host"] == lab.address("b")
    assert devices["c_echo"]["host"] == lab.address("c")
    assert all(d["alive"] for d in devices.values())

    client = lab.popen(
        "d",
        "-c",
        CLIENT,
        ns_host,
        ns_port,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def ask(name: str) -> str:
        client.stdin.write(name + "\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    assert ask("b_echo") == "OK b_echo 1000"  # jobs run on both hosts
    assert ask("c_echo") == "OK c_echo 1000"

    server_b.kill()  # host B's server dies
    server_b.wait(10)
    answer = ask("b_echo")
    assert answer.startswith("ERR DeviceUnreachable") and "b_echo" in answer
    ping = lab.run(
        "d", "-m", "pyroinst", "--ns-host", ns_host, "--ns-port", ns_port, "ping", "b_echo"
    )
    assert ping.returncode == 3 and "error:" in ping.stderr
    assert ask("c_echo") == "OK c_echo 1000"  # the other host is unaffected

    start_server("b")  # B comes back (another port): the same client proxy continues
    assert ask("b_echo") == "OK b_echo 1000"

    name_server.send_signal(signal.SIGTERM)  # the name server restarts, empty
    name_server.wait(10)
    start_ns()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = listing()
        if found and {"b_dev", "b_echo", "c_dev", "c_echo"} <= {d["name"] for d in found}:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"registrations not back after the name server restart: {listing()}")
    assert ask("b_echo") == "OK b_echo 1000"
    client.stdin.close()
    client.wait(10)

"""The README is what a newcomer needs; the reference is in docs/, linked, and its examples run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

import pyroinst
from devices.dummy import DummyDevice
from tests import docs
from tests.helpers import ROOT, clean_env, wait_until

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading (lower case, punctuation dropped)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page) -> set[str]:
    body = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.*)$", body, re.M)}


def test_the_readme_is_the_newcomers_page():
    readme = docs.page("README.md")
    assert len(readme.splitlines()) < 250, "the reference belongs in docs/"
    for needed in (
        "pip install -e '.[test,web,notebook,qcodes,bluesky,bench]'",  # install
        "pyroinst serve --demo",  # the demo
        ".venv/bin/python -m pytest",  # the test command
        "pyroinst.connect(",  # a client
    ):
        assert needed in readme, needed
    linked = {m.split("#")[0] for m in _LINK.findall(readme)}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README does not link docs/{page.name}"


def test_every_link_between_the_pages_leads_somewhere():
    broken = []
    for page in docs.PAGES:
        body = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in _LINK.findall(body):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_readme_client_runs(make_server, ns):
    make_server({"dev": DummyDevice(idn_delay=0.01)})
    env = clean_env(PYROINST_NS_HOST=ns.host, PYROINST_NS_PORT=str(ns.port))
    proc = subprocess.run(
        [sys.executable, "-c", docs.block("readme-client")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("pyroinst,DummyDevice,"), lines
    assert sum(int(n) for n in lines[1:]) == 2000, lines


def test_the_readme_server_serves_and_stops(ns):
    env = clean_env(PYROINST_NS_HOST=ns.host, PYROINST_NS_PORT=str(ns.port))
    server = subprocess.Popen(
        [sys.executable, "-c", docs.block("readme-server")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def registered():
            with pyroinst.locate_ns(ns.host, ns.port) as nsp:
                return "cam" in nsp.list()

        wait_until(registered, timeout=60, interval=0.1)
        cam = pyroinst.connect("cam", ns.host, ns.port, timeout=10)
        assert cam.describe()["doc"] == "A camera on the beamline."
        assert cam.exposure(0.1) is None
        job = cam.acquire(3)
        assert job.result(timeout=10) is None
        cam._pyroRelease()
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, out
    with pyroinst.locate_ns(ns.host, ns.port) as nsp:
        assert "cam" not in nsp.list()


@pytest.mark.parametrize("marker", ["readme-asyncio", "clients-asyncio"])
def test_the_asyncio_examples_run(make_server, ns, marker):
    make_server({"dev": DummyDevice(idn_delay=0.01)})
    env = clean_env(PYROINST_NS_HOST=ns.host, PYROINST_NS_PORT=str(ns.port))
    proc = subprocess.run(
        [sys.executable, "-c", docs.block(marker)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    if marker == "readme-asyncio":
        assert lines[0].startswith("pyroinst,DummyDevice,"), lines
        assert sum(int(n) for n in lines[1:-1]) == 500 and lines[-1] == "(500,)", lines
    else:
        assert lines[0].startswith("True (300,) "), lines
        assert lines[1] == "1", lines  # a hundred concurrent calls, one identity

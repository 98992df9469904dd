"""Pyro5's own test suite, run with pyroinst imported first, has no failure of its own.

The suite comes from the source distribution of the installed Pyro5 version (it ships
``tests/``), fetched once with pip and kept in the temp directory. It runs inside a
network namespace made for it, with only loopback, because some of its tests use the
machine's own address and broadcast lookups; its tests marked ``network`` (those that
need a real interface) are left out. A failure counts only if the same test passes
without pyroinst. Skipped, saying why, where the source or a namespace cannot be had.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pyroinst import compat
from tests.helpers import ROOT, clean_env
from tests.netns import Namespace, namespaces_unavailable

CACHE = Path(tempfile.gettempdir()) / "pyroinst-pyro5-source"

_RUNNER = """
import sys
if sys.argv[1] == "with":
    sys.path.insert(0, {root!r})
    import pyroinst  # before any test, as a lab script that uses both would
    assert pyroinst.fastwire.enabled()
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-m", "not network",
                      "--junitxml", sys.argv[2], *sys.argv[3:]]))
"""


def _pyro5_tests() -> Path:
    """The ``tests`` folder of the installed Pyro5's source distribution (skip if none)."""
    version = compat.pyro5_version()
    for folder in CACHE.glob("*/tests"):
        if folder.parent.name.lower() == f"pyro5-{version}":
            return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        + ["--dest", str(CACHE), f"Pyro5=={version}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    archives = [p for p in CACHE.glob("*.tar.gz") if p.name.lower() == f"pyro5-{version}.tar.gz"]
    if got.returncode != 0 or not archives:
        pytest.skip(f"the source distribution of Pyro5 {version} cannot be had: {got.stderr}")
    with tarfile.open(archives[0]) as archive:
        archive.extractall(CACHE, filter="data")
    for folder in CACHE.glob("*/tests"):
        if folder.parent.name.lower() == f"pyro5-{version}":
            return folder
    pytest.skip(f"the source distribution of Pyro5 {version} has no tests/ folder")


def _failures(report: Path) -> set[str]:
    failed = set()
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(f"{case.get('file') or case.get('classname')}::{case.get('name')}")
    return failed


def _node_ids(report: Path, names: set[str]) -> list[str]:
    ids = []
    for case in ET.parse(report).getroot().iter("testcase"):
        key = f"{case.get('file') or case.get('classname')}::{case.get('name')}"
        if key in names:
            module, _, cls = (case.get("classname") or "").partition(".")
            parts = [f"{module}.py", *([cls] if cls else []), case.get("name") or ""]
            ids.append("::".join(parts))
    return ids


def _run(netns: Namespace, tests: Path, mode: str, report: Path, *select: str) -> None:
    subprocess.run(
        netns.command(sys.executable, "-c", _RUNNER.format(root=str(ROOT)), mode, str(report))
        + list(select),
        cwd=tests,
        env={k: v for k, v in clean_env().items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.exists(), f"Pyro5's suite did not run ({mode} pyroinst)"


def test_pyro5_suite_has_no_new_failures_with_pyroinst_imported(tmp_path):
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(f"Pyro5's suite uses the machine's address and broadcast: {reason}")
    tests = _pyro5_tests()
    with Namespace() as netns:
        with_report = tmp_path / "with.xml"
        _run(netns, tests, "with", with_report)
        failed = _failures(with_report)
        also_without: set[str] = set()
        if failed:
            without_report = tmp_path / "without.xml"
            _run(netns, tests, "without", without_report, *_node_ids(with_report, failed))
            also_without = _failures(without_report)
    ran = sum(1 for _ in ET.parse(with_report).getroot().iter("testcase"))
    assert ran > 300, f"only {ran} of Pyro5's tests ran"
    assert failed <= also_without, f"fail only with pyroinst: {sorted(failed - also_without)}"

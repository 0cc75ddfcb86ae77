"""The product wheel (and so the container image, which installs it) holds the product alone;
the API simulator is a distribution of its own (simulator/pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO_ROOT

pytestmark = pytest.mark.unit


def build_wheel(project: Path, out: Path, glob: str) -> list[str]:
    """The file names inside the wheel of `project` (built without its dependencies)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(project)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob(glob)
    return zipfile.ZipFile(wheel).namelist()


def test_the_wheel_holds_the_product_without_its_test_kit(tmp_path: Path) -> None:
    names = build_wheel(REPO_ROOT, tmp_path, "askelephant_kafka-*.whl")
    packages = {n.split("/")[0] for n in names if not n.startswith("askelephant_kafka-")}
    assert packages == {"producer"}
    for forbidden in ("devstack", "demo", "pom.xml", "tests/", "benchmarks", "simulator"):
        assert not [n for n in names if forbidden in n], forbidden
    # What the product needs at run time is there.
    assert "producer/_schemas/contacts.avsc" in names
    assert "producer/cli.py" in names


def test_the_simulator_is_a_wheel_of_its_own_without_the_product(tmp_path: Path) -> None:
    names = build_wheel(REPO_ROOT / "simulator", tmp_path, "askelephant_simulator-*.whl")
    packages = {n.split("/")[0] for n in names if not n.startswith("askelephant_simulator-")}
    assert packages == {"askelephant_simulator"}
    assert "askelephant_simulator/server.py" in names
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    wheel = zipfile.ZipFile(next(tmp_path.glob("askelephant_simulator-*.whl")))
    requires = [
        line for line in wheel.read(metadata).decode().splitlines() if line.startswith("Requires")
    ]
    # It stands in for the API the product talks to, so it must not need the product.
    assert not [line for line in requires if "askelephant-kafka" in line], requires
    assert "askelephant-simulator = askelephant_simulator.runner:main" in (
        wheel.read(entry_points).decode()
    )

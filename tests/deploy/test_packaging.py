"""The wheel (and so the container image, which installs it) holds the product alone."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO_ROOT

pytestmark = pytest.mark.unit


def test_the_wheel_holds_the_product_without_its_test_kit(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("askelephant_kafka-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/")[0] for n in names if not n.startswith("askelephant_kafka-")}
    assert packages == {"producer"}
    for forbidden in ("devstack", "demo", "pom.xml", "tests/", "benchmarks"):
        assert not [n for n in names if forbidden in n], forbidden
    # What the product needs at run time is there.
    assert "producer/_schemas/contacts.avsc" in names
    assert "producer/simulator/server.py" in names

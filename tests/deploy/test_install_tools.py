"""scripts/install-tools.sh is idempotent: a second run in the same clone succeeds at once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.deploy.conftest import REPO_ROOT, _tool

pytestmark = pytest.mark.tools


def test_install_tools_exits_0_when_run_twice() -> None:
    # The tools are already there (make test installs them first), so nothing is
    # downloaded: exactly the re-run that used to exit 1 from its EXIT trap.
    _tool("helm")
    _tool("promtool")
    env = {**os.environ, "VENV": sys.prefix}
    for attempt in (1, 2):
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "install-tools.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"run {attempt}: {result.stderr}"

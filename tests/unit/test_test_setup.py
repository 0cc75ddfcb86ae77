"""The test set-up itself: hypothesis' example database must never break a run."""

import os
import re
import subprocess
import sys
from pathlib import Path

from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.conftest import HYPOTHESIS_DB, TESTS_DIR

REPO_ROOT = TESTS_DIR.parent


def test_hypothesis_uses_no_database_in_ci_and_an_existing_one_locally() -> None:
    database = settings.default.database
    if os.environ.get("CI", "").strip().lower() == "true":
        assert database is None
    else:
        assert isinstance(database, DirectoryBasedExampleDatabase)
        assert Path(database.path) == HYPOTHESIS_DB
        assert HYPOTHESIS_DB.is_dir()


def test_the_unit_selection_passes_without_helm_or_promtool(tmp_path: Path) -> None:
    """`make unit` (-m "unit and not tools") on a machine where `make tools` never ran: with
    CI=true a test that needs a missing tool fails instead of skipping, so any such test left
    in the selection fails this run."""
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    unit = re.search(r"^unit:(.*)\n\t(.*)$", makefile, re.M)
    assert unit is not None
    assert "tools" not in unit.group(1).split()  # no prerequisite that downloads them
    assert '-m "unit and not tools"' in unit.group(2)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("-m", "unit and not tools", "tests/deploy", "tests/unit/test_monitoring_assets.py"),
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "CI": "true",
            "ASKELEPHANT_TOOLS_BIN": str(tmp_path),  # empty: no helm, no promtool
            "PATH": os.pathsep.join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir()),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert "deselected" in result.stdout  # the tool tests exist and were left out

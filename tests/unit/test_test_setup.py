"""The test set-up itself: hypothesis' example database must never break a run."""

import os
from pathlib import Path

from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.conftest import HYPOTHESIS_DB


def test_hypothesis_uses_no_database_in_ci_and_an_existing_one_locally() -> None:
    database = settings.default.database
    if os.environ.get("CI", "").strip().lower() == "true":
        assert database is None
    else:
        assert isinstance(database, DirectoryBasedExampleDatabase)
        assert Path(database.path) == HYPOTHESIS_DB
        assert HYPOTHESIS_DB.is_dir()

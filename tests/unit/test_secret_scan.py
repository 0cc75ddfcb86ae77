"""The secrets scan (tests/support/secret_scan.py) catches a planted secret, and says so
without printing it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import secret_scan
from tests.support.secrets import ALL, API_KEY, REGISTRY_PASSWORD, SASL_PASSWORD, WEBHOOK_SECRET

REPO = Path(__file__).resolve().parents[2]


def test_each_secret_is_found_and_masked_by_name() -> None:
    text = f"user=svc password={SASL_PASSWORD} key={API_KEY}"
    leaks = secret_scan.find(text, "somewhere")
    assert {leak.secret for leak in leaks} == {"SASL password", "API key"}
    assert secret_scan.mask(text) == "user=svc password=<SASL password> key=<API key>"
    assert secret_scan.find("nothing to see: ***", "somewhere") == []


def test_the_secrets_are_distinct_and_distinctive() -> None:
    values = list(ALL.values())
    assert len(set(values)) == len(values)
    assert all(len(v) >= 20 for v in values)


def test_a_webhook_secret_is_found_without_its_prefix_too() -> None:
    body = WEBHOOK_SECRET.removeprefix("whsec_")
    assert [leak.secret for leak in secret_scan.find(f"key {body}", "x")] == ["webhook secret"]


def test_a_planted_secret_fails_the_test_it_leaked_in_and_is_never_printed(
    tmp_path: Path,
) -> None:
    planted = tmp_path / "test_planted.py"
    planted.write_text(
        textwrap.dedent(
            """
            import logging
            from pathlib import Path

            from tests.support import secret_scan
            from tests.support.secrets import API_KEY, REGISTRY_PASSWORD, SASL_PASSWORD

            def test_prints_it():
                print("connecting with", SASL_PASSWORD)

            def test_logs_it():
                logging.getLogger("planted").warning("key %s", API_KEY)

            def test_a_subprocess_log_has_it(tmp_path):
                log = tmp_path / "service.log"
                log.write_text("basic auth askelephant-registry:" + REGISTRY_PASSWORD)
                secret_scan.watch_file(log, "a service's log")

            def test_clean():
                print("nothing secret here")
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.support.secret_scan",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            "-q",
            "-rA",
            str(planted),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    # the log file is read when its test ends: a leak there is an error of that test
    assert "2 failed, 2 passed, 1 error" in output, output
    assert "SASL password in captured stdout call" in output
    assert "API key in captured log call" in output
    assert "registry password in a service's log (service.log)" in output
    # the report names the secret and shows the output masked, never the value
    assert "connecting with <SASL password>" in output
    for value in (SASL_PASSWORD, API_KEY, REGISTRY_PASSWORD):
        assert value not in output

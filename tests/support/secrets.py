"""The secrets the test suite hands to the producer and to the services it starts.

Each is a string no log line could contain by chance, so that finding one in captured
output (tests/support/secret_scan.py) can only mean a leak."""

from __future__ import annotations

import subprocess

from askelephant_simulator.app import DEFAULT_API_KEY

SASL_PASSWORD = "scram-pw-Q7vTgR2wLk9z-only-in-tests"
"""The SCRAM-SHA-512 password of the secured test broker's user."""

REGISTRY_PASSWORD = "registry-pw-R4mY9cXe1Hs7-only-in-tests"
"""The basic-auth password of the secured test registry."""

WEBHOOK_SECRET = "whsec_" + "dGVzdC1zZWNyZXQtb2YtdGhlLWRlbGV0ZXMtdGVzdHM="
"""The webhook signing secret of the delete-path tests (tests/integration/test_deletes.py)."""

API_KEY = DEFAULT_API_KEY
"""The API key the simulator accepts, which the producer sends."""

ALL = {
    "SASL password": SASL_PASSWORD,
    "registry password": REGISTRY_PASSWORD,
    "webhook secret": WEBHOOK_SECRET,
    "API key": API_KEY,
}


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    """None of the secrets is in a command's output (said where a test is about secrets;
    the scan checks every command's output anyway)."""
    output = result.stdout + result.stderr
    leaked = [name for name, value in ALL.items() if value in output]
    assert not leaked, f"{', '.join(leaked)} in the output of the command"

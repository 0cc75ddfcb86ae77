"""Suite-wide pytest wiring: markers by folder, the real Kafka broker + schema registry.

`local_stack` (session scope) is started once, on first use, by devstack: an
existing cluster (KAFKA_BOOTSTRAP_SERVERS / SCHEMA_REGISTRY_URL), Docker, or Apache Kafka
jars and Apicurio Registry from Maven Central run on Java. When none can be had, tests that
use it are skipped locally and FAIL under CI=true: a missing broker in CI is a
failure, never a skip.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from hypothesis.database import DirectoryBasedExampleDatabase

from devstack import HOW_TO_GET_A_BROKER, LocalStack, StackUnavailable
from devstack._common import cache_root
from devstack.kafka import DEFAULT_KAFKA_VERSION, SECURITY_MODES, RunningKafka, start_local_kafka
from devstack.registry import DEFAULT_APICURIO_VERSION, RunningRegistry, start_secure_registry
from tests.support import secret_scan

log = logging.getLogger("tests.devstack")

TESTS_DIR = Path(__file__).resolve().parent
_FOLDER_MARKERS = {"unit": "unit", "integration": "integration"}

#: What the session's stack was (printed again in the terminal summary).
_stack_description: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


# Hypothesis keeps failing examples in an example database on disk. CI starts from a fresh
# clone and throws the database away, and a database directory that does not exist yet made
# hypothesis warn (an error under filterwarnings=error): CI runs without one and prints the
# reproduction blob of a failure instead; locally the directory is created before use.
HYPOTHESIS_DB = TESTS_DIR.parent / ".hypothesis" / "examples"
hypothesis_settings.register_profile("ci", database=None, print_blob=True)
if _in_ci():
    hypothesis_settings.load_profile("ci")
else:
    HYPOTHESIS_DB.mkdir(parents=True, exist_ok=True)
    hypothesis_settings.register_profile(
        "local", database=DirectoryBasedExampleDatabase(str(HYPOTHESIS_DB))
    )
    hypothesis_settings.load_profile("local")


def pytest_configure(config: pytest.Config) -> None:
    # Every captured output and log is scanned for the test secrets (the module says how).
    if not config.pluginmanager.has_plugin("secret-scan"):
        config.pluginmanager.register(secret_scan, "secret-scan")


def pytest_report_header(config: pytest.Config) -> list[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    source = (
        f"KAFKA_BOOTSTRAP_SERVERS={external}"
        if external
        else f"mode={os.environ.get('DEVSTACK_MODE', 'auto')}, jar cache {cache_root()}"
    )
    kafka = os.environ.get("DEVSTACK_KAFKA_VERSION") or DEFAULT_KAFKA_VERSION
    apicurio = os.environ.get("DEVSTACK_APICURIO_VERSION") or DEFAULT_APICURIO_VERSION
    # Named here so the CI log says what the integration tests ran against.
    return [
        f"devstack: broker + schema registry started on first use ({source})",
        f"devstack: without Docker: Apache Kafka {kafka} and Apicurio Registry {apicurio} "
        "(the stack actually used is printed in the summary)",
    ]


TOOL_FIXTURES = frozenset({"helm", "helm_bin", "promtool"})
"""Fixtures that need a binary from `make tools` (scripts/install-tools.sh)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """tests/unit/** get the `unit` marker, tests/integration/** get `integration`; a test
    that uses helm or promtool gets `tools` too, so `make unit` can leave it out."""
    for item in items:
        if TOOL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.tools)
        try:
            relative = Path(item.path).resolve().relative_to(TESTS_DIR)
        except ValueError:
            continue
        marker = _FOLDER_MARKERS.get(relative.parts[0]) if relative.parts else None
        if marker and not any(m.name == marker for m in item.iter_markers()):
            item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """The real Kafka broker and schema registry, shared by the whole session."""
    stack = LocalStack()
    try:
        stack.start()
    except StackUnavailable as exc:
        message = f"No Kafka broker / schema registry for the integration tests: {exc}"
        if _in_ci():
            pytest.fail(f"{message}\n(CI=true: a missing broker is a failure)", pytrace=False)
        pytest.skip(f"{message}\nTo run them: {HOW_TO_GET_A_BROKER}.")
    _stack_description.append(stack.describe())
    log.info("devstack: %s", stack.describe())
    try:
        yield stack
    finally:
        if stack.kafka is not None:
            secret_scan.scan_file(stack.kafka.log_path, "the broker's log")
        if stack.registry is not None:
            secret_scan.scan_file(stack.registry.log_path, "the registry's log")
        stack.stop()


@pytest.fixture(scope="session", params=SECURITY_MODES)
def secure_kafka(request: pytest.FixtureRequest) -> Iterator[RunningKafka]:
    """A broker of its own whose only client listener is SASL_SSL (SCRAM-SHA-512) or mutual
    TLS; `client_config` holds what a client needs. Session scope and one mode at a time:
    pytest groups the tests by mode, so each secured broker starts once per session.
    A test for one mode only says so with
    `@pytest.mark.parametrize("secure_kafka", ["mtls"], indirect=True)`."""
    from tests.support.secrets import SASL_PASSWORD

    mode = str(request.param)
    try:
        kafka = start_local_kafka(mode, scram_password=SASL_PASSWORD)
    except StackUnavailable as exc:
        message = f"No {mode} Kafka broker for the integration tests: {exc}"
        if _in_ci():
            pytest.fail(f"{message}\n(CI=true: a missing broker is a failure)", pytrace=False)
        pytest.skip(f"{message}\nTo run them: install Java 17+, Maven 3 and openssl.")
    _stack_description.append(
        f"{mode} broker: Apache Kafka {kafka.version} at {kafka.bootstrap_servers}, "
        f"ready in {kafka.start_seconds:.1f}s"
    )
    try:
        yield kafka
    finally:
        secret_scan.scan_file(kafka.log_path, f"the {mode} broker's log")
        kafka.stop()


@pytest.fixture(scope="session")
def secure_registry() -> Iterator[RunningRegistry]:
    """Apicurio Registry of its own behind HTTPS and basic auth (its certificate made at its
    start); `client_config` holds the CA file and the credentials."""
    from tests.support.secrets import REGISTRY_PASSWORD

    try:
        registry = start_secure_registry(REGISTRY_PASSWORD)
    except StackUnavailable as exc:
        message = f"No secured schema registry for the integration tests: {exc}"
        if _in_ci():
            pytest.fail(f"{message}\n(CI=true: a missing registry is a failure)", pytrace=False)
        pytest.skip(f"{message}\nTo run them: {HOW_TO_GET_A_BROKER}.")
    _stack_description.append(
        f"secured registry: {registry.implementation} at {registry.url}, "
        f"ready in {registry.start_seconds:.1f}s"
    )
    try:
        yield registry
    finally:
        secret_scan.scan_file(registry.log_path, "the secured registry's log")
        registry.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for description in _stack_description:
        terminalreporter.write_line(f"devstack: {description}")


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A fresh, valid topic name per test (not created: auto-create or AdminClient does)."""
    stem = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:80].strip("-.")
    return f"test.{stem}.{uuid.uuid4().hex[:10]}"

"""Secrets never leave: every output the suite captures is scanned for the test secrets.

A pytest plugin (its hooks are imported by tests/conftest.py). What it scans:

* each test's captured stdout, stderr and log records (what pytest prints for a failure
  and what live logging writes to the CI log), and its failure text;
* the output of every producer process a test ran (`tests.support.processes.cli`), and
  the log files registered with `watch_file` (`start_run`'s log, the brokers' and the
  registries' logs), read when the test ends and before a service deletes its log.

A hit fails the test it happened in (or, outside a test, the session), naming the secret
and where it was seen, never printing it: the scanned sections of the report are masked
before pytest shows them. The secrets are tests/support/secrets.py's, distinctive strings
that nothing prints by chance.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import secrets

_lock = threading.Lock()
_pending: list[Leak] = []
_unattributed: list[Leak] = []
_watched: dict[Path, str] = {}


@dataclass(frozen=True)
class Leak:
    secret: str
    """The secret's name (never its value)."""
    where: str


def _needles(known: Mapping[str, str]) -> dict[str, str]:
    """Each secret, and the base64 body of a `whsec_` secret alone (what a decoder logs)."""
    needles: dict[str, str] = {}
    for name, value in known.items():
        needles[value] = name
        if value.startswith("whsec_"):
            needles[value.removeprefix("whsec_")] = name
    return needles


def find(text: str, where: str, known: Mapping[str, str] | None = None) -> list[Leak]:
    """The secrets of `known` (default: the suite's) that occur in `text`."""
    needles = _needles(secrets.ALL if known is None else known)
    found = {name for needle, name in needles.items() if needle in text}
    return [Leak(name, where) for name in sorted(found)]


def mask(text: str, known: Mapping[str, str] | None = None) -> str:
    # longest first, so that a secret containing another is masked whole
    for needle, name in sorted(
        _needles(secrets.ALL if known is None else known).items(), key=lambda kv: -len(kv[0])
    ):
        text = text.replace(needle, f"<{name}>")
    return text


def check(text: str, where: str) -> None:
    """Scan output a test obtained itself (a subprocess's); hits fail the current test."""
    leaks = find(text, where)
    if leaks:
        with _lock:
            _pending.extend(leaks)


def watch_file(path: Path, what: str) -> None:
    """Scan `path` when the current test ends (and at `scan_file`, for a file about to go)."""
    with _lock:
        _watched[Path(path)] = what


def scan_file(path: Path | None, what: str) -> None:
    """Scan a log file now (a service's, before the service deletes it)."""
    if path is None:
        return
    with _lock:
        _watched.pop(Path(path), None)
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return
    check(text, f"{what} ({Path(path).name})")


def _scan_watched() -> None:
    with _lock:
        watched = dict(_watched)
        _watched.clear()
    for path, what in watched.items():
        scan_file(path, what)


def _take_pending() -> list[Leak]:
    with _lock:
        leaks = list(_pending)
        _pending.clear()
    return leaks


def _scan_report(report: pytest.TestReport) -> list[Leak]:
    leaks: list[Leak] = []
    masked: list[tuple[str, str]] = []
    for title, content in report.sections:
        # A report carries the sections of the phases before it too: each is judged once.
        if title.endswith(f" {report.when}"):
            leaks += find(content, title.lower())
        masked.append((title, mask(content)))
    report.sections = masked
    text = report.longreprtext
    if text:
        found = find(text, "failure report")
        if found:
            leaks += found
            report.longrepr = mask(text)
    return leaks


def _fail(report: pytest.TestReport, leaks: Iterable[Leak]) -> None:
    lines = "\n".join(f"  {leak.secret} in {leak.where}" for leak in leaks)
    message = f"a test secret reached captured output (tests/support/secret_scan.py):\n{lines}"
    previous = report.longreprtext if report.failed else ""
    report.outcome = "failed"
    report.longrepr = f"{previous}\n\n{message}" if previous else message


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when == "teardown":
        _scan_watched()
    leaks = _scan_report(report) + _take_pending()
    if leaks:
        _fail(report, leaks)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """What was found outside any test (a session fixture's teardown after the last one)."""
    _scan_watched()
    leaks = _take_pending()
    if leaks:
        _unattributed.extend(leaks)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for leak in _unattributed:
        terminalreporter.write_line(
            f"SECRET LEAK: {leak.secret} in {leak.where} (tests/support/secret_scan.py)", red=True
        )

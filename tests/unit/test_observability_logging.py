"""JSON/text log output, extras, and secret redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from producer.observability.logging import (
    MASK,
    JsonFormatter,
    LibrdkafkaLogRouter,
    RedactingFilter,
    _clear_secrets,
    configure_logging,
    librdkafka_logger,
    log_run,
    redact,
    redact_value,
    register_secret,
)

pytestmark = pytest.mark.unit

API_KEY = "sk-apik_01HXYZ.s3cr3t-Value_x"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.payload.sig"
BASIC = "registry-user:pa55word!"


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    noisy = {n: logging.getLogger(n).level for n in ("httpx", "httpcore")}
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    for n, lvl in noisy.items():
        logging.getLogger(n).setLevel(lvl)
    _clear_secrets()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_with_extras() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger("producer.test")
    log.info("fetched %d records", 3, extra={"resource": "contacts", "page": 2})
    log.debug("hidden")
    log.warning("when", extra={"at": datetime(2024, 5, 1, tzinfo=UTC), "level": "clash"})
    lines = json_lines(out)
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "INFO"
    assert first["logger"] == "producer.test"
    assert first["message"] == "fetched 3 records"
    assert first["resource"] == "contacts"
    assert first["page"] == 2
    ts = datetime.fromisoformat(first["ts"])
    assert ts.utcoffset() is not None
    assert ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert first["ts"].endswith("Z")
    assert lines[1]["at"] == "2024-05-01T00:00:00+00:00"
    assert lines[1]["level"] == "WARNING"
    assert lines[1]["extra_level"] == "clash"


def test_exception_is_a_string_field() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("run failed", extra={"resource": "tags"})
    (line,) = json_lines(out)
    assert line["message"] == "run failed"
    assert line["level"] == "ERROR"
    assert isinstance(line["exc_info"], str)
    assert "Traceback" in line["exc_info"]
    assert "ValueError: boom" in line["exc_info"]


def test_auto_format_text_on_tty_json_otherwise() -> None:
    tty = TTY()
    configure_logging("INFO", "auto", stream=tty)
    logging.getLogger("producer.a").info("hello world", extra={"resource": "users"})
    text = tty.getvalue()
    assert "INFO" in text
    assert "producer.a: hello world resource=users" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)

    pipe = io.StringIO()
    configure_logging("INFO", "auto", stream=pipe)
    logging.getLogger("producer.a").info("hello")
    assert json_lines(pipe)[0]["message"] == "hello"
    # the first handler was replaced, not duplicated
    assert tty.getvalue() == text


def test_explicit_text_format_and_level_validation() -> None:
    out = io.StringIO()
    configure_logging("warn", "text", stream=out)
    logging.getLogger("b").info("no")
    logging.getLogger("b").warning("yes")
    assert out.getvalue().count("\n") == 1
    assert "WARNING" in out.getvalue()
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD", "json", stream=out)
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml", stream=out)  # type: ignore[arg-type]


def test_httpx_request_lines_silenced_unless_debug() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logging.getLogger("httpx").info("HTTP Request: GET ...")
    assert out.getvalue() == ""
    configure_logging("DEBUG", "json", stream=out)
    logging.getLogger("httpx").info("HTTP Request: GET ...")
    assert json_lines(out)[0]["logger"] == "httpx"


@pytest.mark.parametrize("library", ["httpx", "confluent_kafka.schema_registry", "svix"])
def test_library_info_lines_are_dropped_unless_debug(library: str) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logging.getLogger(library).info("HTTP Request: POST http://registry/versions")
    logging.getLogger("producer.service").info("own line")
    logging.getLogger(library).warning("library warning")
    assert [(r["logger"], r["message"]) for r in json_lines(out)] == [
        ("producer.service", "own line"),
        (library, "library warning"),
    ]
    out = io.StringIO()
    configure_logging("DEBUG", "json", stream=out)
    logging.getLogger(library).info("HTTP Request: POST http://registry/versions")
    assert [r["logger"] for r in json_lines(out)] == [library]


def test_redact_patterns_and_registered_secrets() -> None:
    assert redact(f"key {API_KEY} used") == f"key {MASK} used"
    assert redact(f"Authorization: Bearer {TOKEN}") == f"Authorization: {MASK}"
    assert redact("nothing here") == "nothing here"
    register_secret(BASIC)
    register_secret("")
    register_secret(None)
    assert redact(f"basic {BASIC}!") == f"basic {MASK}!"
    assert redact_value({"a": [BASIC, 1, None], "b": (API_KEY,)}) == {
        "a": [MASK, 1, None],
        "b": [MASK],
    }


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_never_logged(fmt: str) -> None:
    register_secret(BASIC)
    register_secret(TOKEN)
    out = io.StringIO()
    configure_logging("DEBUG", fmt, stream=out)  # type: ignore[arg-type]
    log = logging.getLogger("producer.api")
    log.info(f"message with {API_KEY} and {BASIC}")
    log.info("args %s %r", API_KEY, {"auth": f"Bearer {TOKEN}"})
    log.info(
        "extras",
        extra={
            "headers": {"Authorization": API_KEY, "X-Other": "fine"},
            "token": TOKEN,
            "nested": [{"cred": BASIC}],
            "obj": RuntimeError(f"with {BASIC}"),
        },
    )
    try:
        raise ConnectionError(f"401 using {API_KEY} / {BASIC} / Bearer {TOKEN}")
    except ConnectionError:
        log.exception("failed with %s", TOKEN)
    log.warning("stack", stack_info=True, extra={"k": f"Bearer {TOKEN}"})
    output = out.getvalue()
    for secret in (API_KEY, TOKEN, BASIC, "s3cr3t", "pa55word", "payload.sig"):
        assert secret not in output, secret
    assert f"{MASK}" in output
    assert "fine" in output
    assert f"ConnectionError: 401 using {MASK}" in output
    if fmt == "json":
        assert len(json_lines(out)) == 5


def test_log_run_one_line() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    log = logging.getLogger("producer.service")
    before = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    log_run(
        log,
        resource="contacts",
        outcome="success",
        fetched=120,
        published=118,
        deduplicated=2,
        stale=0,
        pages=2,
        checkpoint_before=before,
        checkpoint_after={"updated_at": "2024-05-01T12:05:00Z", "ids": ["c1"]},
        duration_s=1.23456,
    )
    log_run(
        log,
        resource="tags",
        outcome="failure",
        duration_s=0.2,
        error=RuntimeError(f"auth {API_KEY}"),
    )
    ok, failed = json_lines(out)
    assert ok["level"] == "INFO"
    assert ok["event"] == "sync_run"
    assert ok["message"] == "sync run contacts: success in 1.235s"
    assert ok["resource"] == "contacts"
    assert ok["outcome"] == "success"
    assert (ok["fetched"], ok["published"], ok["deduplicated"], ok["stale"], ok["pages"]) == (
        120,
        118,
        2,
        0,
        2,
    )
    assert ok["duration_s"] == 1.235
    assert ok["checkpoint_before"] == "2024-05-01T12:00:00+00:00"
    assert ok["checkpoint_after"] == {"updated_at": "2024-05-01T12:05:00Z", "ids": ["c1"]}
    assert "error" not in ok
    assert failed["level"] == "ERROR"
    assert failed["error"] == f"RuntimeError: auth {MASK}"
    assert failed["checkpoint_before"] is None


def test_log_run_text_and_validation() -> None:
    out = TTY()
    configure_logging("INFO", "auto", stream=out)
    log = logging.getLogger("svc")
    log_run(log, resource="users", outcome="interrupted", duration_s=3, fetched=1)
    line = out.getvalue()
    assert "WARNING" in line
    assert "sync run users: interrupted in 3.000s" in line
    assert "resource=users outcome=interrupted fetched=1 duration_s=3" in line
    with pytest.raises(TypeError):
        log_run(log, resource="users", outcome="success", duration_s=1, fetched="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clash"):
        log_run(log, resource="users", outcome="success", duration_s=1, lineno=3)


def test_bad_format_args_do_not_lose_the_record() -> None:
    # exercised on the filter directly: pytest's own capture handler would raise first
    record = logging.LogRecord(
        "c", logging.INFO, __file__, 1, "%d items", ("not-a-number", API_KEY), None
    )
    assert RedactingFilter().filter(record)
    assert "log formatting failed" in record.getMessage()
    assert API_KEY not in record.getMessage()
    assert JsonFormatter().format(record)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail_line(router: LibrdkafkaLogRouter, ms: int = 0) -> None:
    # The exact call confluent-kafka makes for a librdkafka log line.
    router.log(
        logging.ERROR,
        "%s [%s] %s: %s",
        "FAIL",
        "rdkafka#producer-1",
        "thrd:127.0.0.1:1/bootstrap",
        f"127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused "
        f"(after {ms}ms in state CONNECT)",
    )


def test_librdkafka_lines_are_structured_mapped_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    router = LibrdkafkaLogRouter(window_s=30, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="producer.librdkafka"):
        for ms in range(200):
            _fail_line(router, ms)
        clock.now += 31
        _fail_line(router)
        router.log(logging.WARNING, "%s [%s] %s: %s", "CONFWARN", "rdkafka#producer-1", "t", "x")
    records = [r for r in caplog.records if r.name == "producer.librdkafka"]
    assert len(records) == 3
    first, second, other = records
    # librdkafka retries these itself: WARNING, the producer decides what is an ERROR.
    assert first.levelno == logging.WARNING
    assert first.facility == "FAIL"  # type: ignore[attr-defined]
    assert first.client == "rdkafka#producer-1"  # type: ignore[attr-defined]
    assert "Connection refused" in first.getMessage()
    assert second.suppressed == 199  # type: ignore[attr-defined]
    assert "199 identical line(s) suppressed" in second.getMessage()
    assert other.facility == "CONFWARN"  # type: ignore[attr-defined]


def test_librdkafka_router_is_the_logger_of_every_kafka_config() -> None:
    from producer.config import load_settings

    conf = load_settings({}).kafka_config()
    assert conf["logger"] is librdkafka_logger()

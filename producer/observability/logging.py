"""Structured logging with secret redaction.

* :func:`configure_logging` installs ONE handler on the root logger: JSON lines (one
  object per record) when the stream is not a terminal or ``fmt="json"``, readable text
  on a terminal or with ``fmt="text"``.
* Every record handled by that handler goes through :class:`RedactingFilter` first:
  registered secret values (:func:`register_secret`) and anything that looks like an
  AskElephant API key (``sk-apik_...``) or a bearer credential (``Bearer <token>``) is
  replaced by ``***`` in the message, its ``%`` arguments, the ``extra={...}`` fields,
  the exception text and the stack info.
* :func:`log_run` writes the one summary line per sync run.
* :func:`librdkafka_logger` is the ``logger`` of every confluent-kafka client: librdkafka's
  own lines become records of the ``producer.librdkafka`` logger (fields ``facility`` and
  ``client``), and a line repeated within 30 s is counted instead of written again.

JSON line keys: ``ts`` (ISO-8601 UTC, millisecond precision, ``Z`` suffix), ``level``,
``logger``, ``message``, then every ``extra`` field given by the caller (an extra whose
name collides with one of these keys is written as ``extra_<name>``), then ``exc_info``
(the formatted traceback) and ``stack_info`` when present.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import IO, Any, Final, Literal

from producer.api.auth import REDACTED

__all__ = [
    "JsonFormatter",
    "LibrdkafkaLogRouter",
    "LogFormat",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "librdkafka_logger",
    "log_run",
    "redact",
    "redact_value",
    "register_secret",
]

LogFormat = Literal["auto", "json", "text"]

MASK: Final = REDACTED
"""The one redaction mask (`producer.api.auth.REDACTED`), in logs and in error messages."""

#: Patterns that are always masked, whether or not the secret was registered.
_SECRET_PATTERNS: Final = (
    re.compile(r"sk-apik_[A-Za-z0-9._-]+"),
    re.compile(r"Bearer\s+\S+"),
)

_secrets_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another is fully masked


def register_secret(value: str | None) -> None:
    """Register a secret value that must never appear in log output.

    Empty values and ``None`` are ignored (so callers can pass optional settings
    unconditionally). Registering the same value twice is harmless. Secrets are
    matched literally (case-sensitive) anywhere in a message, argument, extra field or
    exception text.
    """
    global _secrets
    if not value:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def _clear_secrets() -> None:
    """Forget every registered secret (tests only)."""
    global _secrets
    with _secrets_lock:
        _secrets = ()


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and credential-looking tokens masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def redact_value(value: Any) -> Any:
    """Return a JSON-serialisable, redacted copy of ``value``.

    Strings are redacted; mappings, lists, tuples and sets are converted recursively;
    ``datetime``/``date`` become ISO-8601 strings, enums their value, dataclasses a dict;
    ``bool``/``int``/finite ``float``/``None`` are kept; non-finite floats and any other
    object become their (redacted) ``str()``.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return redact_value(value.value)
    if isinstance(value, Mapping):
        return {redact(str(k)): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: redact_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    return redact(str(value))


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}


class RedactingFilter(logging.Filter):
    """Masks secrets in a record before any formatter sees it (always returns True).

    The record is rewritten in place: ``msg`` becomes the fully rendered, redacted
    message and ``args`` is cleared; extra fields are replaced by their
    :func:`redact_value` copies; the exception and stack texts are pre-rendered into
    ``exc_text``/``stack_info`` and redacted (``exc_info`` is cleared so no formatter
    renders the raw traceback again).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad %-format must not lose the record
            message = f"{record.msg!r} (log formatting failed: {exc!r}; args={record.args!r})"
        record.msg = redact(message)
        record.args = None
        for key, value in _extras(record).items():
            setattr(record, key, redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _iso_utc(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


_CORE_KEYS: Final = ("ts", "level", "logger", "message", "exc_info", "stack_info")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out[f"extra_{key}" if key in _CORE_KEYS else key] = redact_value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = record.stack_info
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <message> key=value ...`` plus the traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso_utc(record.created)} {record.levelname:<8} {record.name}: "
        line += record.getMessage()
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_text_value(redact_value(v))}" for k, v in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value) if (not value or any(c.isspace() for c in value)) else value
    return json.dumps(value, default=str)


_LEVELS: Final = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_NOISY_LOGGERS: Final = ("httpx", "httpcore")
_OWN_LOGGERS: Final = ("producer", "devstack")


class ThirdPartyFilter(logging.Filter):
    """Passes libraries' records only from WARNING up (all of them at DEBUG).

    A library's INFO lines (httpx's `HTTP Request: POST .../versions` for every schema
    registration, and whatever a new dependency adds) say nothing an operator acts on and
    push the service's own lines off the screen.
    """

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if self.debug or record.levelno >= logging.WARNING:
            return True
        root = record.name.partition(".")[0]
        return root in _OWN_LOGGERS


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "auto", stream: IO[str] | None = None
) -> logging.Handler:
    """Install the service's log handler on the root logger and return it.

    ``level``: CRITICAL, ERROR, WARNING (or WARN), INFO or DEBUG, case-insensitive.
    ``fmt``: ``"json"``, ``"text"`` or ``"auto"`` (text if ``stream`` is a TTY, else JSON).
    ``stream``: defaults to ``sys.stderr``.

    Idempotent: a handler installed by an earlier call is replaced; handlers installed by
    anything else (e.g. pytest's capture) are left alone. Libraries' INFO lines (e.g. the
    per-request lines of ``httpx``) are dropped unless ``level`` is DEBUG.
    Raises ``ValueError`` for an unknown level or format.
    """
    name = level.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}")
    if fmt not in ("auto", "json", "text"):
        raise ValueError(f"unknown log format {fmt!r}; expected auto, json or text")
    out = sys.stderr if stream is None else stream
    if fmt == "auto":
        isatty = getattr(out, "isatty", None)
        fmt = "text" if callable(isatty) and isatty() else "json"

    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ThirdPartyFilter(debug=name == "DEBUG"))
    handler.addFilter(RedactingFilter())
    handler._askelephant_handler = True  # type: ignore[attr-defined]

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_askelephant_handler", False):
            root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelNamesMapping()[name]
    root.setLevel(numeric)
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(
            logging.NOTSET if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
        )
    return handler


_RUN_LEVELS: Final = {"success": logging.INFO, "interrupted": logging.WARNING}


def log_run(
    logger: logging.Logger,
    *,
    resource: str,
    outcome: str,
    duration_s: float,
    checkpoint_before: object = None,
    checkpoint_after: object = None,
    error: str | BaseException | None = None,
    level: int | None = None,
    **counts: int,
) -> None:
    """Write the one summary line of a sync run.

    ``counts`` are the run's counters, e.g. ``fetched=120, published=118,
    deduplicated=2, stale=0, dead_lettered=0, pages=2`` (any names, int values).
    Checkpoints may be anything (datetime, str, dataclass, dict, None); they are
    rendered with :func:`redact_value`. ``level`` defaults to INFO for ``success``,
    WARNING for ``interrupted`` and ERROR otherwise.

    The record carries the extra fields ``event="sync_run"``, ``resource``,
    ``outcome``, each count, ``duration_s`` (rounded to ms), ``checkpoint_before``,
    ``checkpoint_after`` and ``error`` (only when given), so JSON output has them as
    top-level keys (text output appends them as ``key=value``); the message itself is
    ``sync run <resource>: <outcome> in <duration>s``.
    """
    bad = [k for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise TypeError(f"log_run counts must be ints: {', '.join(sorted(bad))}")
    reserved = _RECORD_ATTRS.intersection(counts)
    if reserved:
        raise ValueError(f"log_run count names clash with LogRecord: {sorted(reserved)}")
    fields: dict[str, Any] = {"event": "sync_run", "resource": resource, "outcome": outcome}
    fields.update(counts)
    fields["duration_s"] = round(duration_s, 3)
    fields["checkpoint_before"] = redact_value(checkpoint_before)
    fields["checkpoint_after"] = redact_value(checkpoint_after)
    if error is not None:
        fields["error"] = (
            f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
        )
    message = f"sync run {resource}: {outcome} in {duration_s:.3f}s"
    if level is None:
        level = _RUN_LEVELS.get(outcome, logging.ERROR)
    logger.log(level, "%s", message, extra=fields)


# ------------------------------------------------------------------------ librdkafka

LIBRDKAFKA_LOGGER: Final = "producer.librdkafka"
LIBRDKAFKA_REPEAT_WINDOW_S: Final = 30.0
_DIGITS: Final = re.compile(r"\d+")


class LibrdkafkaLogRouter:
    """The ``logger`` object confluent-kafka calls as ``log(level, "%s [%s] %s: %s", ...)``.

    Levels: librdkafka's ERR lines (connection refused, broker down, ...) are conditions it
    retries by itself, so they become WARNING; the producer logs its own ERROR when it gives up
    (a start-up check, a delivery error). Everything else keeps its level.

    Rate limit: a line equal to one written less than ``window_s`` ago (numbers ignored, so
    "after 3ms" and "after 5ms" are the same line) is not written; the next one written
    after the window carries ``suppressed=<count>``. Thread-safe.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        window_s: float = LIBRDKAFKA_REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger or logging.getLogger(LIBRDKAFKA_LOGGER)
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[int, str, str], tuple[float, int]] = {}

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if len(args) == 4:
            facility, client, text = str(args[0]), str(args[1]), str(args[3])
        else:  # not the shape confluent-kafka uses today: keep the line whole
            facility, client = "", ""
            text = fmt % args if args else fmt
        if level == logging.ERROR:
            level = logging.WARNING
        if not self.logger.isEnabledFor(level):
            return
        key = (level, facility, _DIGITS.sub("#", text))
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.window_s:
                self._last[key] = (last[0], last[1] + 1)
                return
            suppressed = last[1] if last is not None else 0
            self._last[key] = (now, 0)
            if len(self._last) > 1_000:  # bounded: forget lines older than the window
                self._last = {k: v for k, v in self._last.items() if now - v[0] < self.window_s}
        fields: dict[str, Any] = {"event": "librdkafka", "facility": facility, "client": client}
        message = f"librdkafka {facility}: {text}" if facility else f"librdkafka: {text}"
        if suppressed:
            fields["suppressed"] = suppressed
            message += f" ({suppressed} identical line(s) suppressed)"
        self.logger.log(level, "%s", message, extra=fields)


_router: LibrdkafkaLogRouter | None = None
_router_lock = threading.Lock()


def librdkafka_logger() -> LibrdkafkaLogRouter:
    """The process-wide router (one rate-limit state for every client)."""
    global _router
    with _router_lock:
        if _router is None:
            _router = LibrdkafkaLogRouter()
        return _router

"""Timestamps as instants.

The API documents ISO-8601 UTC date-times but renders them with varying precision
(whole seconds in responses, milliseconds in examples; docs/askelephant-api.md §4.4). Comparing
those as
strings is wrong (`...:00Z` sorts after `...:00.5Z`), so everything here works on integer
microseconds since the Unix epoch. Sub-microsecond digits are truncated, never rounded up,
so a filter value derived from a record is never later than the record.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

Micros = int

_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?:[.,](?P<frac>\d{1,9}))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:?\d{2})$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidTimestampError(ValueError):
    """A date-time the API (or an operator) wrote that is not an ISO-8601 instant with a zone."""


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 date-time with an explicit zone into an aware UTC datetime."""
    if not isinstance(text, str):
        raise InvalidTimestampError(f"expected an ISO-8601 string, got {type(text).__name__}")
    match = _ISO.match(text.strip())
    if match is None:
        raise InvalidTimestampError(f"not an ISO-8601 date-time with a time zone: {text!r}")
    frac = (match["frac"] or "").ljust(6, "0")[:6]
    tz = match["tz"].upper()
    if tz != "Z" and ":" not in tz:
        tz = f"{tz[:3]}:{tz[3:]}"
    try:
        parsed = datetime.fromisoformat(
            f"{match['date']}T{match['time']}.{frac}{'+00:00' if tz == 'Z' else tz}"
        )
        # OverflowError: a valid local time whose UTC instant a datetime cannot hold
        # (0001-01-01T00:00:00+14:00); record data, so it must reject the record like any
        # other bad timestamp, never fail the run (issue 17, failure 7)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidTimestampError(f"invalid date-time {text!r}: {exc}") from None


def to_micros(moment: datetime) -> Micros:
    """Microseconds since the epoch of an aware datetime, exactly (no float rounding)."""
    if moment.tzinfo is None:
        raise InvalidTimestampError("naive datetime: a time zone is required")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: Micros) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def instant_micros(text: str) -> Micros:
    return to_micros(parse_instant(text))


def format_instant(micros: Micros) -> str:
    """Render as UTC `Z` with millisecond precision, or microseconds when needed.

    Exact: the rendered value parses back to the same instant, so it is never later than
    the record it came from.
    """
    moment = from_micros(micros)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond % 1000 == 0:
        return f"{base}.{moment.microsecond // 1000:03d}Z"
    return f"{base}.{moment.microsecond:06d}Z"

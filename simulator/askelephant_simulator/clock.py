"""Timestamps and the simulator's settable clock.

Every instant is held as an ``int`` of microseconds since the Unix epoch (UTC): that is the
simulator's *stored precision*.  Rendering to ISO-8601 truncates to ``s``, ``ms`` or ``us``.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

Precision = Literal["s", "ms", "us"]
PRECISIONS: Final[tuple[Precision, ...]] = ("s", "ms", "us")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_S: Final = 1_000_000

# docs/askelephant-api.md §2.1: the filters take "ISO-8601 UTC date-time"; docs/askelephant-api.md
# §4.4: examples come with whole
# seconds (`2026-03-01T12:00:00Z`) and with milliseconds (`2026-03-01T00:00:00.000Z`).
# Simulator choice: accept `Z` or any numeric offset (converted to UTC), `T`/`t`, any number of
# fraction digits (truncated to microseconds); reject naive values and dates without a time.
_ISO_RE: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))$"
)


def to_us(value: datetime) -> int:
    """An aware datetime -> microseconds since the epoch (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US_PER_S + delta.microseconds


def from_us(us: int) -> datetime:
    """Microseconds since the epoch -> aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def truncate_us(us: int, precision: Precision) -> int:
    """Truncate (floor) an instant to the rendering precision."""
    if precision == "s":
        return us - us % _US_PER_S
    if precision == "ms":
        return us - us % 1_000
    return us


def format_ts(us: int, precision: Precision = "ms") -> str:
    """Render an instant as ISO-8601 UTC with a trailing ``Z``, truncated to ``precision``.

    docs/askelephant-api.md §4.4: responses show `2026-03-04T18:25:00Z` (s), webhooks `...00.000Z`
    (ms).
    """
    dt = from_us(us)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if precision == "s":
        return base + "Z"
    if precision == "ms":
        return f"{base}.{dt.microsecond // 1000:03d}Z"
    return f"{base}.{dt.microsecond:06d}Z"


def parse_ts(text: str) -> int:
    """Parse an ISO-8601 date-time with an explicit UTC designator or offset -> epoch µs.

    Raises ``ValueError`` on anything else.
    """
    m = _ISO_RE.match(text)
    if m is None:
        raise ValueError(f"not an ISO-8601 date-time with a UTC offset: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction = m.group(7) or ""
    micro = int((fraction + "000000")[:6])
    dt = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    if m.group(8) is None:
        sign = 1 if m.group(9) == "+" else -1
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError(f"invalid UTC offset in {text!r}")
        dt -= sign * timedelta(hours=oh, minutes=om)
    return to_us(dt)


class SimClock:
    """The simulator's notion of "now".

    ``SimClock()`` follows the wall clock; ``SimClock(start)`` is frozen at ``start`` and only
    moves through :meth:`set` / :meth:`advance` (reproducible tests).  ``advance`` on a running
    clock shifts it by an offset.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._frozen_us: int | None = None if start is None else to_us(start)
        self._offset_us = 0

    @property
    def frozen(self) -> bool:
        with self._lock:
            return self._frozen_us is not None

    def now_us(self) -> int:
        with self._lock:
            if self._frozen_us is not None:
                return self._frozen_us
            return time.time_ns() // 1_000 + self._offset_us

    def now(self) -> datetime:
        return from_us(self.now_us())

    def set(self, value: datetime) -> None:
        """Freeze the clock at ``value``."""
        with self._lock:
            self._frozen_us = to_us(value)

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or backward with a negative value)."""
        delta = round(seconds * _US_PER_S)
        with self._lock:
            if self._frozen_us is not None:
                self._frozen_us += delta
            else:
                self._offset_us += delta

    def unfreeze(self) -> None:
        """Follow the wall clock again (without offset)."""
        with self._lock:
            self._frozen_us = None
            self._offset_us = 0


@dataclass(frozen=True)
class Ts:
    """A date-time value inside a record (epoch µs); rendered at the dataset's precision."""

    us: int

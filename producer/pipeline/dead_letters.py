"""PURE: the dead-letter record: what a record that cannot become a change event turns into.

A dead letter keeps the record exactly as the API sent it (the value), the record id as key
where there is one, and headers that say where it came from and why it is here. The same
module reads the headers back (`askelephant-kafka dead-letters`, redrive), so the format has
one definition. docs/dead-letters.md describes it for operators.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from producer.sync.run import PLACEMENT_REASONS

SCHEMA_MISMATCH: Final = "schema_mismatch"
"""A non-nullable field is missing or does not fit the Avro schema."""
TOO_LARGE: Final = "too_large"
"""The encoded event is larger than the change topic accepts (`max.message.bytes`)."""
REASONS: Final = (*PLACEMENT_REASONS, SCHEMA_MISMATCH, TOO_LARGE)
"""Every reason code; the `reason` label of `records_dead_lettered_total`."""

_FIELDS: Final = (
    "resource",
    "reason",
    "message",
    "run_id",
    "request_id",
    "page",
    "position",
    "producer_id",
    "topic",
    "record_id",
    "updated_at",
)


class RawRecords(Protocol):
    """Each record's JSON exactly as the source sent it, by position (may be cut lazily)."""

    def __len__(self) -> int: ...

    def __getitem__(self, position: int, /) -> bytes: ...


@dataclass(frozen=True)
class Origin:
    """Where a record came from: its request, page and position, and its page's raw JSON."""

    request_id: str | None
    page: int
    position: int
    raw_records: RawRecords

    @property
    def raw(self) -> bytes:
        """The record's JSON exactly as the API sent it."""
        return self.raw_records[self.position]


@dataclass(frozen=True)
class DeadLetter:
    resource: str
    reason: str
    message: str
    value: bytes
    """The record's JSON exactly as the API sent it."""
    run_id: str
    producer_id: str
    topic: str
    """The change topic the record was meant for."""
    request_id: str | None = None
    page: int = 0
    position: int = 0
    record_id: str | None = None
    updated_at: str | None = None
    detail: Mapping[str, str] = field(default_factory=dict)
    """Reason-specific facts, e.g. `size` and `limit` for `too_large`."""

    @property
    def key(self) -> bytes | None:
        return None if self.record_id is None else self.record_id.encode()

    def headers(self) -> list[tuple[str, bytes]]:
        values = {
            "resource": self.resource,
            "reason": self.reason,
            "message": self.message,
            "run_id": self.run_id,
            "request_id": self.request_id,
            "page": str(self.page),
            "position": str(self.position),
            "producer_id": self.producer_id,
            "topic": self.topic,
            "record_id": self.record_id,
            "updated_at": self.updated_at,
            **self.detail,
        }
        return [(name, value.encode()) for name, value in values.items() if value is not None]

    @classmethod
    def from_message(
        cls,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None] | None,
    ) -> DeadLetter:
        """Read a dead letter back from a Kafka message of the dead-letter topic."""
        found: dict[str, str] = {}
        pairs = headers.items() if isinstance(headers, Mapping) else headers or []
        for name, raw in pairs:
            if raw is not None:
                found[name] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return cls(
            resource=found.get("resource", ""),
            reason=found.get("reason", ""),
            message=found.get("message", ""),
            value=value or b"",
            run_id=found.get("run_id", ""),
            producer_id=found.get("producer_id", ""),
            topic=found.get("topic", ""),
            request_id=found.get("request_id"),
            page=_int(found.get("page")),
            position=_int(found.get("position")),
            record_id=found.get("record_id"),
            updated_at=found.get("updated_at"),
            detail={k: v for k, v in found.items() if k not in _FIELDS},
        )


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0

"""PURE: the EventBuilder stage: each accepted version becomes an event or a rejection.

A rejection carries a machine-readable reason (`producer.pipeline.dead_letters.REASONS`);
the orchestrator turns it into a dead letter (or fails the run under `DEAD_LETTER_POLICY=fail`).
The record's id and instant come from `SyncRun` (parsed once, `producer.sync.run.identify`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from producer import schemas
from producer.events import RecordConformanceError
from producer.events_compiled import CompiledEventBuilder
from producer.pipeline.dead_letters import SCHEMA_MISMATCH, Origin
from producer.sync.run import Version


@dataclass(frozen=True)
class OutgoingEvent:
    """A change event ready for the sink, with what a dead letter of it would need."""

    key: str
    value: Mapping[str, Any]
    """The event (a dict the resource's Avro schema writes)."""
    updated_at: str
    origin: Origin


@dataclass(frozen=True)
class Rejection:
    """Why a record did not become an event; `detail` adds facts (e.g. size and limit)."""

    reason: str
    message: str
    detail: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """What every event of one run shares."""

    run_id: str
    snapshot: bool
    api_version: str | None
    now_ms: int


class EventBuilder:
    """Builds the events of one resource; the schema is compiled once
    (`producer.events_compiled`: the reference's output, without its per-record schema walk)."""

    def __init__(self, resource: str, producer_id: str) -> None:
        self.resource = resource
        self.producer_id = producer_id
        self._compiled = CompiledEventBuilder(resource, schemas.record_schema(resource))

    def build(
        self, version: Version, origin: Origin, context: RunContext
    ) -> OutgoingEvent | Rejection:
        try:
            event = self._compiled.build(
                version.record,
                run_id=context.run_id,
                producer_id=self.producer_id,
                api_version=context.api_version,
                snapshot=context.snapshot,
                now_ms=context.now_ms,
                updated_at_us=version.instant,
            )
        except RecordConformanceError as exc:
            return Rejection(SCHEMA_MISMATCH, str(exc))
        except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
            # Record data the conformance checks did not foresee (a nesting deeper than the
            # interpreter's stack, a number or date no type can hold): one record is
            # rejected, the run goes on (issue 17, failure 7). A bug in our own code is one
            # of these too, and dead letters make it visible instead of stalling the lane.
            return Rejection(
                SCHEMA_MISMATCH, f"cannot build the event: {type(exc).__name__}: {exc}"
            )
        return OutgoingEvent(version.record_id, event, version.updated_at, origin)

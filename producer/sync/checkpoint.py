"""The checkpoint of one resource and its JSON form (what the compacted topic stores).

A checkpoint is an `updated_at` instant whose run committed, plus the versions at or after it
that the run already published: the ids at exactly that instant (`boundary_ids`) and, rarely,
`(id, updated_at)` pairs beyond it (`ahead`, see `producer.sync.run` on the run-start cap).
The next run asks for `gte` that instant and skips exactly those versions, so the boundary is
replayed without duplicates and without gaps.

A boundary of any size is stored (issue 17, failure 8a); the checkpoint store writes a large
one as chunk records (producer/sync/chunks.py), so no Kafka record grows with it.

`boundary_complete=False`: checkpoints written by older releases, which dropped a boundary of
more than 10,000 versions. The next run then republishes every record from the checkpoint
instant on: at-least-once (the events carry the same `event_id`), never a loss.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from producer.sync.timestamps import InvalidTimestampError, Micros, format_instant, instant_micros

CHECKPOINT_FORMAT_VERSION = 1
DEFAULT_MAX_REJECTED = 10_000
"""Fingerprints of rejected records kept in a checkpoint; past it none are (the replay then
dead-letters them again: a repeated dead letter, never a lost one)."""
MAX_RESET_HISTORY = 20
"""Resets kept in a checkpoint (the newest ones)."""


class CheckpointFormatError(ValueError):
    """A stored checkpoint that cannot be read. Never treated as 'no checkpoint'."""


@dataclass(frozen=True)
class ResetEntry:
    """One operator reset: who, when, and the checkpoint before and after it."""

    by: str
    at: str
    from_: str | None
    """The `updated_at` before the reset (None: none, or it was unreadable; see `note`)."""
    to: str | None
    """The `updated_at` after the reset (None: a full export)."""
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"by": self.by, "at": self.at, "from": self.from_, "to": self.to}
        if self.note is not None:
            body["note"] = self.note
        return body

    @classmethod
    def from_dict(cls, body: Any) -> ResetEntry:
        if not isinstance(body, dict) or not isinstance(body.get("by"), str):
            raise CheckpointFormatError("resets must be a list of {by, at, from, to} objects")
        values = [body.get("at"), body.get("from"), body.get("to"), body.get("note")]
        if not isinstance(values[0], str) or not all(
            v is None or isinstance(v, str) for v in values[1:]
        ):
            raise CheckpointFormatError("resets must be a list of {by, at, from, to} objects")
        return cls(by=body["by"], at=body["at"], from_=values[1], to=values[2], note=values[3])


@dataclass(frozen=True)
class Checkpoint:
    resource: str
    updated_at: str | None
    """The newest `updated_at`, exactly as the API wrote it; None after a reset to a full export."""
    boundary_ids: frozenset[str] = frozenset()
    ahead: frozenset[tuple[str, Micros]] = frozenset()
    """Published versions later than `updated_at` (ids with their instants)."""
    boundary_complete: bool = True
    rejected: frozenset[str] = frozenset()
    """Fingerprints (`producer.sync.run.fingerprint`) of the records the run rejected: the
    replay skips them instead of dead-lettering them again."""
    run_id: str = ""
    completed_at: str = ""
    record_count: int = 0
    """Events the committing run published."""
    reset_by: str | None = None
    reset_from: str | None = None
    resets: tuple[ResetEntry, ...] = ()
    """Reset history, oldest first, at most `MAX_RESET_HISTORY`; every later checkpoint of the
    resource carries it forward (`carry_history_from`), so the audit survives the next run."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Fields written by newer versions, kept so a rewrite does not drop them."""
    token: str | None = field(default=None, compare=False)
    """Unique per stored record (None: written by a release before compare-and-set)."""
    based_on: str | None = field(default=None, compare=False)
    """The `token` of the checkpoint this one replaces (None: there was none), or `FORCED`
    for an operator's reset: see `supersedes`."""

    def __post_init__(self) -> None:
        if self.updated_at is not None:
            instant_micros(self.updated_at)  # raises InvalidTimestampError on garbage

    def carry_history_from(self, previous: Checkpoint | None) -> Checkpoint:
        """This checkpoint with `previous`'s reset history (kept if this one has its own)."""
        if previous is None or self.resets or not previous.resets:
            return self
        return replace(self, resets=previous.resets)

    @property
    def instant(self) -> Micros | None:
        return None if self.updated_at is None else instant_micros(self.updated_at)

    @property
    def filter_value(self) -> str | None:
        """The `filter[updated_at][gte]` value: the same instant, normalised to UTC.

        None means a bulk export (no filter).
        """
        instant = self.instant
        return None if instant is None else format_instant(instant)

    def skips(self, record_id: str, instant: Micros) -> bool:
        """Whether this version was already published by the run that wrote the checkpoint."""
        if not self.boundary_complete:
            return False
        if instant == self.instant:
            return record_id in self.boundary_ids
        return (record_id, instant) in self.ahead

    def to_json(self) -> bytes:
        body: dict[str, Any] = dict(self.extra)
        body.update(
            {
                "format": CHECKPOINT_FORMAT_VERSION,
                "resource": self.resource,
                "updated_at": self.updated_at,
                "boundary_ids": sorted(self.boundary_ids),
                "ahead": [[i, format_instant(t)] for i, t in sorted(self.ahead)],
                "boundary_complete": self.boundary_complete,
                "rejected": sorted(self.rejected),
                "run_id": self.run_id,
                "completed_at": self.completed_at,
                "record_count": self.record_count,
            }
        )
        if self.reset_by is not None:
            body["reset_by"] = self.reset_by
            body["reset_from"] = self.reset_from
        if self.resets:
            body["resets"] = [entry.to_dict() for entry in self.resets]
        if self.token is not None:
            body["token"] = self.token
            body["based_on"] = self.based_on
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Checkpoint:
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointFormatError(f"checkpoint is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise CheckpointFormatError("checkpoint JSON is not an object")
        known = {
            "format",
            "resource",
            "updated_at",
            "boundary_ids",
            "ahead",
            "boundary_complete",
            "rejected",
            "run_id",
            "completed_at",
            "record_count",
            "reset_by",
            "reset_from",
            "resets",
            "token",
            "based_on",
        }
        try:
            version = body.get("format", CHECKPOINT_FORMAT_VERSION)
            if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
                raise CheckpointFormatError(f"unsupported checkpoint format {version!r}")
            resource, updated_at = body["resource"], body["updated_at"]
            ids = body.get("boundary_ids", [])
            if not isinstance(resource, str):
                raise CheckpointFormatError("resource must be a string")
            if updated_at is not None and not isinstance(updated_at, str):
                raise CheckpointFormatError("updated_at must be a string or null")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise CheckpointFormatError("boundary_ids must be a list of strings")
            ahead = body.get("ahead", [])
            if not isinstance(ahead, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                for p in ahead
            ):
                raise CheckpointFormatError("ahead must be a list of [id, updated_at] pairs")
            rejected = body.get("rejected", [])
            if not isinstance(rejected, list) or not all(isinstance(r, str) for r in rejected):
                raise CheckpointFormatError("rejected must be a list of strings")
            resets = body.get("resets", [])
            if not isinstance(resets, list):
                raise CheckpointFormatError("resets must be a list of {by, at, from, to} objects")
            reset_by, reset_from = body.get("reset_by"), body.get("reset_from")
            if not all(v is None or isinstance(v, str) for v in (reset_by, reset_from)):
                raise CheckpointFormatError("reset_by and reset_from must be strings")
            token, based_on = body.get("token"), body.get("based_on")
            if not all(v is None or isinstance(v, str) for v in (token, based_on)):
                raise CheckpointFormatError("token and based_on must be strings")
            return cls(
                resource=resource,
                rejected=frozenset(rejected),
                updated_at=updated_at,
                boundary_ids=frozenset(ids),
                ahead=frozenset((i, instant_micros(t)) for i, t in ahead),
                boundary_complete=bool(body.get("boundary_complete", True)),
                run_id=str(body.get("run_id", "")),
                completed_at=str(body.get("completed_at", "")),
                record_count=int(body.get("record_count", 0)),
                reset_by=reset_by,
                reset_from=reset_from,
                resets=tuple(ResetEntry.from_dict(r) for r in resets),
                extra={k: v for k, v in body.items() if k not in known},
                token=token,
                based_on=based_on,
            )
        except KeyError as exc:
            raise CheckpointFormatError(f"checkpoint lacks required field {exc}") from None
        except (InvalidTimestampError, TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointFormatError):
                raise
            raise CheckpointFormatError(f"invalid checkpoint: {exc}") from None


FORCED: Final = "*"
"""`based_on` of a write meant to overwrite whatever is there (`askelephant-kafka reset`)."""


def supersedes(incoming: Checkpoint, latest: Checkpoint | None) -> bool:
    """Whether `incoming`, read from the checkpoint topic after `latest`, replaces it (PURE).

    The topic's order decides a compare-and-set that holds across processes (issue 17,
    failure 9): a writer names the record it computed from (`based_on`), and every reader
    takes the record only if that is still the latest. Of two writers that read the same
    checkpoint, the first to land wins; the second is ignored by every reader, and its writer
    learns it when it reads its own record back (`CheckpointStore.commit`). No window
    between a check and a write is left: the check happens in the log's order.

    A record without a token (an older release) or a forced one (a reset) always replaces;
    a record re-read after its writer remembered it replaces itself.

    Compaction keeps only the last record of the key, so what a record was based on may be
    gone: the first record a reader meets for a key is taken as it is. That is also why a
    losing record must never stay last (compaction would keep it and drop the winner): the
    store writes a copy of the winner after it (`CheckpointStore.repair`)."""
    if latest is None or incoming.token is None or incoming.based_on == FORCED:
        return True
    if latest.token == incoming.token:
        return True
    return incoming.based_on == latest.token


def reset_checkpoint(
    resource: str,
    to: str | None,
    *,
    previous: Checkpoint | None,
    reset_by: str,
    completed_at: str,
    run_id: str,
    previous_note: str | None = None,
) -> Checkpoint:
    """An operator's reset: replay from `to` (inclusive), or a full export when `to` is None.

    The reset is appended to the history carried over from `previous` (newest
    `MAX_RESET_HISTORY` kept). `previous_note` describes a previous checkpoint that could not
    be read (then `previous` is None).
    """
    entry = ResetEntry(
        by=reset_by,
        at=completed_at,
        from_=previous.updated_at if previous is not None else None,
        to=to,
        note=previous_note,
    )
    history = (*(previous.resets if previous is not None else ()), entry)
    return Checkpoint(
        resource=resource,
        updated_at=to,
        run_id=run_id,
        completed_at=completed_at,
        reset_by=reset_by,
        reset_from=entry.from_,
        resets=history[-MAX_RESET_HISTORY:],
    )

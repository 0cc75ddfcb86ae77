"""PURE: the progress mark of a run in progress, and its JSON form (checkpoint topic, key
`<producer id>/<resource>/progress`).

A long run (a first bulk export can take hours) records, every batch of pages, where it
could resume: a checkpoint-shaped mark (`SyncRun.progress_mark`) up to which every event was
acknowledged (or, in exactly-once mode, committed in the same transaction). A restarted run
resumes from it instead of from the committed checkpoint, with `gte` the mark and the mark's
dedup state. The committed checkpoint itself still moves only when a run completes; a
completed run, and a reset, clear the mark.

A mark belongs to the committed checkpoint its run started from (`based_on`, that
checkpoint's run id): once that checkpoint changed (a reset, or another run completed), the
mark is stale and ignored.

A time-sliced first export (producer/sync/slices.py) marks every window instead: its `(gte,
lt)`, the window's own mark (None: not started), whether it finished, and its run-start cap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from producer.sync.checkpoint import Checkpoint, CheckpointFormatError
from producer.sync.timestamps import Micros

PROGRESS_SUFFIX = "/progress"


@dataclass(frozen=True)
class WindowProgress:
    """One window of a time-sliced export in a progress mark."""

    gte: str
    lt: str | None
    mark: Checkpoint | None
    """Where the window resumes, with its dedup state (None: nothing taken yet)."""
    done: bool
    horizon: Micros | None
    """The window's run-start cap (the checkpoint of the whole export never passes it)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "gte": self.gte,
            "lt": self.lt,
            "mark": None if self.mark is None else json.loads(self.mark.to_json()),
            "done": self.done,
            "horizon": self.horizon,
        }

    @classmethod
    def from_dict(cls, body: Any) -> WindowProgress:
        mark, lt, horizon = body.get("mark"), body.get("lt"), body.get("horizon")
        return cls(
            gte=str(body["gte"]),
            lt=None if lt is None else str(lt),
            mark=None if mark is None else Checkpoint.from_json(json.dumps(mark)),
            done=bool(body["done"]),
            horizon=None if horizon is None else int(horizon),
        )


@dataclass(frozen=True)
class Progress:
    resource: str
    mark: Checkpoint | None
    """Where the run resumes (None for a sliced export: see `windows`)."""
    snapshot: bool
    """The interrupted run is a bulk export (its events keep op `r` when resumed)."""
    based_on: str | None
    """Run id of the committed checkpoint the run started from (None: there was none)."""
    run_id: str
    pages: int
    """Pages the run had taken when it wrote this mark."""
    written_at: str
    windows: tuple[WindowProgress, ...] = ()
    """A time-sliced export: every window's progress (empty for one traversal)."""

    def applies_to(self, committed: Checkpoint | None) -> bool:
        """Whether a run starting from `committed` may resume from this mark."""
        return self.based_on == (committed.run_id if committed is not None else None)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "kind": "progress",
            "resource": self.resource,
            "mark": None if self.mark is None else json.loads(self.mark.to_json()),
            "snapshot": self.snapshot,
            "based_on": self.based_on,
            "run_id": self.run_id,
            "pages": self.pages,
            "written_at": self.written_at,
        }
        if self.windows:
            body["windows"] = [w.to_dict() for w in self.windows]
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Progress:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or body.get("kind") != "progress":
                raise CheckpointFormatError("not a progress record")
            based_on, mark = body.get("based_on"), body["mark"]
            windows = tuple(WindowProgress.from_dict(w) for w in body.get("windows", ()))
            if mark is None and not windows:
                raise CheckpointFormatError("a progress record with neither mark nor windows")
            return cls(
                resource=str(body["resource"]),
                mark=None if mark is None else Checkpoint.from_json(json.dumps(mark)),
                snapshot=bool(body.get("snapshot", False)),
                based_on=None if based_on is None else str(based_on),
                run_id=str(body.get("run_id", "")),
                pages=int(body.get("pages", 0)),
                written_at=str(body.get("written_at", "")),
                windows=windows,
            )
        except CheckpointFormatError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointFormatError(f"unreadable progress record: {exc}") from None

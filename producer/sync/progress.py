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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from producer.sync.checkpoint import Checkpoint, CheckpointFormatError

PROGRESS_SUFFIX = "/progress"


@dataclass(frozen=True)
class Progress:
    resource: str
    mark: Checkpoint
    snapshot: bool
    """The interrupted run is a bulk export (its events keep op `r` when resumed)."""
    based_on: str | None
    """Run id of the committed checkpoint the run started from (None: there was none)."""
    run_id: str
    pages: int
    """Pages the run had taken when it wrote this mark."""
    written_at: str

    def applies_to(self, committed: Checkpoint | None) -> bool:
        """Whether a run starting from `committed` may resume from this mark."""
        return self.based_on == (committed.run_id if committed is not None else None)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "kind": "progress",
            "resource": self.resource,
            "mark": json.loads(self.mark.to_json()),
            "snapshot": self.snapshot,
            "based_on": self.based_on,
            "run_id": self.run_id,
            "pages": self.pages,
            "written_at": self.written_at,
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Progress:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or body.get("kind") != "progress":
                raise CheckpointFormatError("not a progress record")
            based_on = body.get("based_on")
            return cls(
                resource=str(body["resource"]),
                mark=Checkpoint.from_json(json.dumps(body["mark"])),
                snapshot=bool(body.get("snapshot", False)),
                based_on=None if based_on is None else str(based_on),
                run_id=str(body.get("run_id", "")),
                pages=int(body.get("pages", 0)),
                written_at=str(body.get("written_at", "")),
            )
        except CheckpointFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointFormatError(f"unreadable progress record: {exc}") from None

"""PURE: a checkpoint or progress mark too large for one Kafka record, as chunk records.

A checkpoint stores every version published at or after its instant (`boundary_ids`,
`ahead`), so that the next run skips them: with the settle window, that is every version of
the last seconds, and there is no upper bound on how many share one instant (issue 17,
failure 8a). Dropping them past a limit would republish them, duplicates even in
exactly-once mode; one record holding them all could pass the checkpoint topic's
`max.message.bytes`. So a large record is written as:

- chunks: the whole record's JSON cut into pieces of at most `CHUNK_BYTES`, each under a key
  of its own, `<producer id>/<resource>/chunks/<token>/<n>` (`chunk_key`), the token being
  unique to the record;
- the main record under the usual key, naming its chunks (`ChunkRef`: token, count, size
  and SHA-256 of the whole), with the small fields a reader needs before assembling (the
  compare-and-set's `token`/`based_on`, `updated_at`, the run). The main checkpoint record
  says `boundary_complete: false` with no ids, which is what a release that does not know
  chunks acts on: it replays the boundary (at least once), never skips what it cannot see.

Readers read the topic to its end first (chunks and main record may sit in different
partitions, whose order relative to each other is not kept) and then assemble; a missing,
extra or garbled chunk makes the record unreadable (`CheckpointFormatError`), never a
checkpoint with a wrong boundary. Chunks of records that are no longer the latest are removed
with tombstones (`CheckpointStore.sweep_chunks`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from producer.sync.checkpoint import Checkpoint, CheckpointFormatError
from producer.sync.progress import Progress

CHUNK_BYTES: Final = 256 * 1024
"""Largest chunk value, and largest record written whole: well under the 1 MiB default of
`max.message.bytes` (and of librdkafka's `message.max.bytes`), key and headers included."""

CHUNKS_FIELD: Final = "chunks"
"""The field of a main record that names its chunks."""

CHUNK_SEGMENT: Final = "/chunks/"
_CHUNK_KEY = re.compile(r"^(?P<base>.+)/chunks/(?P<token>[0-9a-f]{1,64})/(?P<n>\d{1,9})$")


@dataclass(frozen=True)
class ChunkRef:
    """What a main record says of its chunks: enough to tell a whole set from a partial or
    mixed one."""

    token: str
    count: int
    size: int
    """Bytes of the whole, once assembled."""
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "count": self.count, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, body: Any) -> ChunkRef:
        if not isinstance(body, dict):
            raise CheckpointFormatError("chunks must be an object")
        token, count, size, digest = (body.get(k) for k in ("token", "count", "size", "sha256"))
        if not (
            isinstance(token, str)
            and re.fullmatch(r"[0-9a-f]{1,64}", token)
            and isinstance(count, int)
            and not isinstance(count, bool)
            and count >= 1
            and isinstance(size, int)
            and not isinstance(size, bool)
            and size >= 0
            and isinstance(digest, str)
        ):
            raise CheckpointFormatError(f"invalid chunks reference {body!r}")
        return cls(token=token, count=count, size=size, sha256=digest)

    def keys(self, base_key: str) -> list[str]:
        return [chunk_key(base_key, self.token, n) for n in range(self.count)]


def chunk_key(base_key: str, token: str, n: int) -> str:
    """`<producer id>/<resource>/chunks/<token>/<n>`: the key of chunk `n` of a record."""
    return f"{base_key}{CHUNK_SEGMENT}{token}/{n}"


def parse_chunk_key(key: str) -> tuple[str, str, int] | None:
    """`(base key, token, n)` of a chunk key; None for any other key."""
    match = _CHUNK_KEY.match(key)
    if match is None:
        return None
    return match["base"], match["token"], int(match["n"])


def split(
    payload: bytes, token: str, chunk_bytes: int = CHUNK_BYTES
) -> tuple[ChunkRef, list[bytes]]:
    """`payload` cut into pieces of at most `chunk_bytes` (at least one piece)."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    parts = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)] or [b""]
    ref = ChunkRef(token, len(parts), len(payload), hashlib.sha256(payload).hexdigest())
    return ref, parts


def assemble(ref: ChunkRef, parts: Mapping[int, bytes]) -> bytes:
    """The whole again; raises `CheckpointFormatError` unless `parts` is exactly chunks
    0..count-1 of it (digest checked: a piece of another record, or a garbled one, is
    refused)."""
    missing = [n for n in range(ref.count) if n not in parts]
    if missing:
        raise CheckpointFormatError(
            f"{len(missing)} of its {ref.count} chunk(s) are missing (first: {missing[0]})"
        )
    extra = sorted(n for n in parts if not 0 <= n < ref.count)
    if extra:
        raise CheckpointFormatError(f"chunk {extra[0]} is beyond its {ref.count} chunk(s)")
    whole = b"".join(parts[n] for n in range(ref.count))
    if len(whole) != ref.size or hashlib.sha256(whole).hexdigest() != ref.sha256:
        raise CheckpointFormatError("its chunks do not match its digest")
    return whole


# --- checkpoints ---------------------------------------------------------------------------


def encode_checkpoint(
    checkpoint: Checkpoint, chunk_bytes: int = CHUNK_BYTES
) -> tuple[bytes, list[bytes], ChunkRef | None]:
    """The main record's value and the chunk values (none when it fits in one record).

    `checkpoint.token` names the chunks, so it must be set (`CheckpointStore.records_for`)."""
    whole = checkpoint.to_json()
    if len(whole) <= chunk_bytes:
        return whole, [], None
    if checkpoint.token is None:
        raise ValueError("a chunked checkpoint needs a token")
    ref, parts = split(whole, checkpoint.token, chunk_bytes)
    # What a release without chunks reads: no boundary it could wrongly trust, so it replays
    # the boundary (at least once) rather than skip versions it was never told about.
    head = replace(
        checkpoint,
        boundary_ids=frozenset(),
        ahead=frozenset(),
        rejected=frozenset(),
        boundary_complete=False,
    )
    body = json.loads(head.to_json())
    body[CHUNKS_FIELD] = ref.to_dict()
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode(), parts, ref


def decode_checkpoint_head(raw: bytes | str) -> tuple[Checkpoint, ChunkRef | None]:
    """A main checkpoint record: the checkpoint (whole, or its head when chunked) and the
    chunks to assemble it from, if any."""
    head = Checkpoint.from_json(raw)
    body = head.extra.get(CHUNKS_FIELD)
    if body is None:
        return head, None
    ref = ChunkRef.from_dict(body)
    if head.token != ref.token:
        raise CheckpointFormatError("its chunks are named by another token than its own")
    extra = {k: v for k, v in head.extra.items() if k != CHUNKS_FIELD}
    return replace(head, extra=extra), ref


def assemble_checkpoint(head: Checkpoint, ref: ChunkRef, parts: Mapping[int, bytes]) -> Checkpoint:
    """The checkpoint a chunked main record names; `CheckpointFormatError` when its chunks
    are not all there, or are not its own."""
    whole = Checkpoint.from_json(assemble(ref, parts))
    if (whole.resource, whole.token, whole.updated_at) != (
        head.resource,
        head.token,
        head.updated_at,
    ):
        raise CheckpointFormatError("its chunks hold another checkpoint than its main record")
    return whole


# --- progress marks ------------------------------------------------------------------------


def encode_progress(
    progress: Progress, token: str, chunk_bytes: int = CHUNK_BYTES
) -> tuple[bytes, list[bytes], ChunkRef | None]:
    """Like `encode_checkpoint`. The main record of a chunked mark holds only the reference:
    a release without chunks finds no mark in it and starts from the checkpoint (a mark is
    an optimisation)."""
    whole = progress.to_json()
    if len(whole) <= chunk_bytes:
        return whole, [], None
    ref, parts = split(whole, token, chunk_bytes)
    body = {"kind": "progress", "resource": progress.resource, CHUNKS_FIELD: ref.to_dict()}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode(), parts, ref


def progress_ref(raw: bytes | str) -> ChunkRef | None:
    """The chunks a progress record names (None: it is whole)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # Progress.from_json says why it is unreadable
    if not isinstance(body, dict) or CHUNKS_FIELD not in body:
        return None
    return ChunkRef.from_dict(body[CHUNKS_FIELD])


def assemble_progress(resource: str, ref: ChunkRef, parts: Mapping[int, bytes]) -> Progress:
    progress = Progress.from_json(assemble(ref, parts))
    if progress.resource != resource:
        raise CheckpointFormatError("its chunks hold another resource's progress mark")
    return progress

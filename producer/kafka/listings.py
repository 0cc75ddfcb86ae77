"""The last finished listing of each resource, kept in the checkpoint topic for reconciliation.

Reconciliation finds deletes by comparing what the API lists now with what the change topic
holds. The change topics keep the broker's retention (7 days by default) and are not
compacted, so a record that was not updated for longer has no message left there: its delete
would go unnoticed. The ids of the previous finished listing close that gap: an id listed
then and not now was deleted in between, whatever the change topic still holds
(issue 17, failure 5).

Records (compacted, no retention, under this producer's prefix, never read as checkpoints):
- `<producer id>/<resource>/listing` -> `{"token", "chunks", "ids", "listed_at_us"}`: the latest
  listing, in `chunks` chunk records;
- `<producer id>/<resource>/listing/<token>/<n>` -> a JSON list of ids, each chunk at most
  `CHUNK_BYTES`.
A header whose chunks are not all there (a crash mid-write) is ignored: reconciliation then
falls back to the change topic alone, as before the first listing was kept. The chunks of a
replaced listing get tombstones, so compaction removes them.

Memory: the ids of one listing as strings, about 70 bytes each (1 M ids: some 70 MB), while
a reconciliation runs.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from confluent_kafka import KafkaError, Producer

from producer.kafka.reader import TopicReadError, scan_to_end

log = logging.getLogger(__name__)

LISTING_SUFFIX: Final = "/listing"
CHUNK_BYTES: Final = 256 * 1024
"""Well under the checkpoint topic's default 1 MB `max.message.bytes`."""


class ListingStoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class Listing:
    ids: frozenset[str]
    listed_at_us: int


def chunked(ids: Iterable[str], limit: int = CHUNK_BYTES) -> list[bytes]:
    """The ids as JSON lists of at most `limit` bytes each (at least one, maybe empty)."""
    chunks: list[bytes] = []
    current: list[str] = []
    size = 2
    for record_id in sorted(ids):
        cost = len(json.dumps(record_id)) + 1
        if current and size + cost > limit:
            chunks.append(_compact(current))
            current, size = [], 2
        current.append(record_id)
        size += cost
    chunks.append(_compact(current))
    return chunks


def _compact(ids: list[str]) -> bytes:
    """`["a","b"]`: 2 bytes plus each id's JSON and a comma between (what `chunked` counts)."""
    return json.dumps(ids, separators=(",", ":")).encode()


def assemble(header: Mapping[str, object], chunks: Mapping[int, bytes]) -> frozenset[str] | None:
    """The ids of a listing from its header and chunk records; None when incomplete or
    inconsistent (never a partial listing: that would invent deletes)."""
    count, total = header.get("chunks"), header.get("ids")
    if not isinstance(count, int) or not isinstance(total, int):
        return None
    ids: set[str] = set()
    for n in range(count):
        raw = chunks.get(n)
        if raw is None:
            return None
        try:
            part = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(part, list) or not all(isinstance(i, str) for i in part):
            return None
        ids.update(part)
    return frozenset(ids) if len(ids) == total else None


class ListingStore:
    """Reads and writes the last finished listing of a resource (see the module docstring)."""

    def __init__(
        self,
        kafka_config: Mapping[str, str | int | float | bool],
        topic: str,
        producer_id: str,
        producer: Producer,
    ) -> None:
        self._kafka_config = dict(kafka_config)
        self.topic = topic
        self.producer_id = producer_id
        self._producer = producer

    def _key(self, resource: str) -> str:
        return f"{self.producer_id}/{resource}{LISTING_SUFFIX}"

    def load(self, resource: str) -> Listing | None:
        header_key = self._key(resource)
        header: dict[str, object] | None = None
        chunks: dict[str, dict[int, bytes]] = {}
        try:
            for msg in scan_to_end(self._kafka_config, self.topic):
                key = (msg.key() or b"").decode("utf-8", "replace")
                if not key.startswith(header_key):
                    continue
                value = msg.value()
                if key == header_key:
                    try:
                        body = json.loads(value) if value is not None else None
                    except ValueError:
                        body = None
                    header = body if isinstance(body, dict) else None
                    continue
                chunk_token, _, n = key[len(header_key) + 1 :].partition("/")
                if value is not None and n.isdigit():
                    chunks.setdefault(chunk_token, {})[int(n)] = value
        except TopicReadError as exc:
            if "UNKNOWN_TOPIC" in str(exc):
                return None
            raise
        if header is None:
            return None
        token = header.get("token")
        ids = assemble(header, chunks.get(token, {}) if isinstance(token, str) else {})
        listed_at = header.get("listed_at_us")
        if ids is None or not isinstance(listed_at, int):
            log.warning(
                "the last listing of %s in %s is incomplete; reconciliation uses the change "
                "topic alone this time",
                resource,
                self.topic,
                extra={"event": "listing_incomplete", "resource": resource},
            )
            return None
        return Listing(ids, listed_at)

    def save(self, resource: str, ids: Iterable[str], listed_at_us: int) -> None:
        """Write the listing (chunks first, then the header that names them), confirmed;
        then tombstones for the chunks of the listing it replaces."""
        previous = self._header(resource)
        token = uuid.uuid4().hex
        parts = chunked(ids)
        count = sum(len(json.loads(p)) for p in parts)
        records: list[tuple[str, bytes | None]] = [
            (f"{self._key(resource)}/{token}/{n}", part) for n, part in enumerate(parts)
        ]
        header = {"token": token, "chunks": len(parts), "ids": count, "listed_at_us": listed_at_us}
        records.append((self._key(resource), json.dumps(header).encode()))
        self._write(records)
        if previous is not None:
            old, chunks = previous
            self._write([(f"{self._key(resource)}/{old}/{n}", None) for n in range(chunks)])

    def _header(self, resource: str) -> tuple[str, int] | None:
        found: tuple[str, int] | None = None
        try:
            for msg in scan_to_end(self._kafka_config, self.topic):
                if (msg.key() or b"").decode("utf-8", "replace") != self._key(resource):
                    continue
                try:
                    body = json.loads(msg.value() or b"null")
                except ValueError:
                    continue
                if isinstance(body, dict) and isinstance(body.get("token"), str):
                    found = (body["token"], int(body.get("chunks", 0)))
        except TopicReadError:
            return None
        return found

    def _write(self, records: list[tuple[str, bytes | None]], timeout_s: float = 60.0) -> None:
        outcomes: list[KafkaError | None] = []
        for key, value in records:
            self._producer.produce(
                self.topic,
                key=key.encode(),
                value=value,
                on_delivery=lambda err, _msg: outcomes.append(err),
            )
        deadline = time.monotonic() + timeout_s
        while len(outcomes) < len(records) and time.monotonic() < deadline:
            self._producer.poll(0.1)
        failed = [e for e in outcomes if e is not None]
        if failed or len(outcomes) < len(records):
            raise ListingStoreError(
                f"listing records not confirmed by {self.topic}: "
                f"{failed[0] if failed else 'timed out'}"
            )

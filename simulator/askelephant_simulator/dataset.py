"""Seeded, thread-safe records of the five AskElephant v2 collections, and their mutations.

Pure (no I/O): the HTTP layer in ``server.py`` calls :meth:`Dataset.page`.

Field-shape conventions (docs/askelephant-api.md §2.4):
- a field documented as ``X | null`` is always present and may be ``null``;
- a field documented as *optional* (or an array that may be empty) is OMITTED when empty,
  never ``null`` (docs/askelephant-api.md §2.4 "Optional, omitted when empty", from /webhooks and
  /pagination).

Values drawn from pools below (names, industries, roles beyond the two documented ones,
data sources, CRM sources, ...) are simulator inventions; only the shapes are documented.
"""

from __future__ import annotations

import bisect
import random
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from askelephant_simulator.clock import PRECISIONS, Precision, SimClock, Ts, format_ts, from_us
from askelephant_simulator.engagement_query import (
    ENGAGEMENT_TYPES,
    PROCESSING_STATUSES,
    EngagementFacts,
)
from askelephant_simulator.expansions import render_expansions
from askelephant_simulator.resources import RESOURCES


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REMOVE: Final = _Sentinel("REMOVE")
"""A `Dataset.corrupt` patch value: leave the key out of the record."""
_KEEP: Final = _Sentinel("KEEP")


@dataclass(frozen=True)
class _Corruption:
    patch: dict[str, Any]
    replace: Any


Resource = str
Order = Literal["asc", "desc"]
ChangeListener = Callable[[str, str, dict[str, Any], int], None]
"""(resource, action, rendered record, instant µs): see `Dataset.add_listener`."""
SortKey = tuple[int, str]  # (updated_at in epoch µs, id): the keyset of the list order


# docs/askelephant-api.md §2.4 "ID formats": cnt_/cmp_/usr_/tag_/ngmt_ + (INFERRED) 26 Crockford
# base32 chars
ID_PREFIX: Final[Mapping[str, str]] = {
    "contacts": "cnt_",
    "companies": "cmp_",
    "users": "usr_",
    "tags": "tag_",
    "engagements": "ngmt_",
}

# docs/askelephant-api.md §2.4: `object` is "contact" / "engagement" (SEEN); "company" is what
# resource_ref uses.
# "user" and "tag" were not visible in the docs: simulator choice.
OBJECT_TYPE: Final[Mapping[str, str]] = {
    "contacts": "contact",
    "companies": "company",
    "users": "user",
    "tags": "tag",
    "engagements": "engagement",
}

# Output order of the resource-specific fields (between `id` and `created_at`).
FIELD_ORDER: Final[Mapping[str, tuple[str, ...]]] = {
    # docs/askelephant-api.md §2.4 Contact
    "contacts": (
        "first_name",
        "last_name",
        "description",
        "company",
        "emails",
        "phone_numbers",
        "crm_association",
        "time_zone",
    ),
    # docs/askelephant-api.md §2.4 Company
    "companies": (
        "name",
        "description",
        "industry",
        "website",
        "number_of_employees",
        "logo_url",
        "domains",
        "crm_association",
    ),
    # docs/askelephant-api.md §2.4 User
    "users": (
        "role",
        "first_name",
        "last_name",
        "job_title",
        "emails",
        "time_zone",
        "last_activity_at",
    ),
    # docs/askelephant-api.md §2.4 Tag
    "tags": ("name", "hex_color", "description", "auto_tagging_enabled"),
    # docs/askelephant-api.md §2.4 Engagement (newer page copy; expand-only fields are not rendered)
    "engagements": (
        "title",
        "engagement_type",
        "processing_status",
        "is_private",
        "description",
        "data_source",
        "is_internal",
        "engagement_at",
        "start_at",
        "end_at",
        "duration_seconds",
        "meeting_url",
        "external_url",
        "crm_association",
        "owner_user_id",
        "host_user_id",
    ),
}

# Fields that `update`/`mutate` may change (ids, created_at and the engagement's time block stay).
MUTABLE_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "contacts": FIELD_ORDER["contacts"],
    "companies": FIELD_ORDER["companies"],
    "users": ("role", "first_name", "last_name", "job_title", "emails", "time_zone"),
    "tags": FIELD_ORDER["tags"],
    "engagements": (
        "title",
        "processing_status",
        "is_private",
        "description",
        "is_internal",
        "meeting_url",
        "external_url",
        "crm_association",
        "owner_user_id",
        "host_user_id",
    ),
}

# docs/askelephant-api.md §2.4 Engagement enums (SEEN: EngagementEngagementType,
# EngagementProcessingStatus)
# (defined next to the filters that validate them)
# docs/askelephant-api.md §2.4 User: role enum values not visible; INACTIVE and NOT_INVITED are
# documented,
# OWNER/ADMIN/MEMBER are simulator inventions (consumers should treat role as a string).
USER_ROLES: Final = ("OWNER", "ADMIN", "MEMBER", "INACTIVE", "NOT_INVITED")

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_SECOND_US: Final = 1_000_000
_DAY_US: Final = 86_400 * _SECOND_US

_FIRST_NAMES: Final = (
    "Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Radia",
    "Tim", "Frances", "Donald", "Hedy", "John", "Edsger", "Sophie", "Guido", "Anita", "Leslie",
    "Chloé", "José", "Zoë", "Björn", "Aiko", "Priya", "Mateo", "Olusegun", "Mei", "Søren",
)  # fmt: skip
_LAST_NAMES: Final = (
    "Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie", "Liskov",
    "Thompson", "Perlman", "Berners-Lee", "Allen", "Knuth", "Lamarr", "McCarthy", "Dijkstra",
    "Wilson", "van Rossum", "Borg", "Lamport", "O'Brien", "Nakamura", "Patel", "García",
    "Okafor", "Zhang", "Kierkegaard", "Müller", "Nguyen", "Smith",
)  # fmt: skip
_COMPANY_STEMS: Final = (
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell",
    "Cyberdyne", "Soylent", "Vandelay", "Pied Piper", "Massive Dynamic", "Aperture", "Gringotts",
    "Müller", "Nakatomi", "Oscorp", "Blue Sun", "Ærø", "Monarch", "Dunder", "Sterling",
)  # fmt: skip
_COMPANY_SUFFIXES: Final = (
    "Inc.", "Labs", "Systems", "Group", "Health", "Logistik GmbH", "Analytics", "Holdings",
    "Software", "Partners", "Robotics", "Foods", "Energy", "Bank",
)  # fmt: skip
_TLDS: Final = ("com", "io", "ai", "co", "de", "net", "dev")
_INDUSTRIES: Final = (
    "Software", "Financial Services", "Healthcare", "Manufacturing", "Retail", "Logistics",
    "Education", "Real Estate", "Media", "Energy", "Telecommunications", "Insurance",
)  # fmt: skip
_TIME_ZONES: Final = (
    "America/Los_Angeles", "America/Denver", "America/Chicago", "America/New_York",
    "America/Sao_Paulo", "Europe/London", "Europe/Berlin", "Europe/Paris", "Asia/Kolkata",
    "Asia/Tokyo", "Australia/Sydney", "UTC",
)  # fmt: skip
_JOB_TITLES: Final = (
    "Account Executive", "Sales Development Representative", "Customer Success Manager",
    "VP of Sales", "Revenue Operations Manager", "Solutions Engineer", "Head of Marketing",
    "Chief Revenue Officer", "Sales Manager", "Support Engineer",
)  # fmt: skip
_TAG_NAMES: Final = (
    "Churn risk", "Expansion", "Pricing objection", "Competitor mention", "Onboarding",
    "Renewal", "Champion identified", "Security review", "Discovery", "Demo", "Follow-up",
    "Budget approved", "Legal review", "Feature request", "Escalation",
)  # fmt: skip
_DESCRIPTIONS: Final = (
    "Met at the spring conference; interested in the analytics add-on.",
    "Primary point of contact for the renewal.\nPrefers email over calls.",
    'Asked about "SOC 2" and data residency in the EU.',
    "Warm lead from the partner program 🚀",
    "Evaluating us against two competitors; decision expected next quarter.",
    "Key account. Do not contact before 9am local time.",
    "Imported from the legacy CRM; verify phone numbers.",
)
_ENGAGEMENT_TITLES: Final = (
    "Discovery call", "Product demo", "Quarterly business review", "Pricing discussion",
    "Onboarding kickoff", "Renewal check-in", "Security questionnaire follow-up",
    "Intro email", "Contract review", "Support escalation", "Weekly sync",
)  # fmt: skip
# docs/askelephant-api.md §2.4 Engagement `data_source` is a plain string; these values are
# simulator inventions.
_DATA_SOURCES: Final = (
    "zoom",
    "google_meet",
    "microsoft_teams",
    "dialer",
    "email",
    "api",
    "upload",
)
# docs/askelephant-api.md §2.4 CRM association `source` is a string (1-255); values are simulator
# inventions.
_CRM_SOURCES: Final = ("hubspot", "salesforce")


def _ascii_slug(text: str) -> str:
    """Lower-case ASCII letters and digits of ``text`` ("Zoë García" -> "zoegarcia")."""
    text = text.lower().replace("æ", "ae").replace("ø", "o").replace("ß", "ss")
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if ch.isascii() and ch.isalnum())


def crockford(value: int, length: int) -> str:
    """``value`` as ``length`` Crockford base32 characters (big-endian)."""
    chars = []
    for _ in range(length):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid(ms: int, rnd: int) -> str:
    """A 26-char ULID: 48-bit millisecond time (10 chars) + 80 random bits (16 chars)."""
    return crockford(ms & ((1 << 48) - 1), 10) + crockford(rnd & ((1 << 80) - 1), 16)


@dataclass
class StoredRecord:
    id: str
    created_us: int
    updated_us: int
    fields: dict[str, Any]
    deleted_us: int | None = None

    @property
    def key(self) -> SortKey:
        return (self.updated_us, self.id)


@dataclass(frozen=True)
class Page:
    """One list page: rendered records, whether more exist, keyset of the last record."""

    records: list[dict[str, Any]]
    has_more: bool
    last_key: SortKey | None


@dataclass
class _Store:
    records: dict[str, StoredRecord] = field(default_factory=dict)
    index: list[SortKey] = field(default_factory=list)  # active records, sorted
    all_ids: list[str] = field(default_factory=list)  # creation order, incl. deleted
    name_uses: dict[str, int] = field(default_factory=dict)  # tag names stay unique


def _check_resource(resource: str) -> None:
    if resource not in ID_PREFIX:
        raise ValueError(f"unknown resource {resource!r}; expected one of {', '.join(RESOURCES)}")


class Dataset:
    """All five collections.  Deterministic for a given ``seed`` and clock start.

    Thread-safe: every public method takes the dataset lock.
    """

    def __init__(
        self,
        seed: int = 42,
        records_per_resource: int = 200,
        *,
        clock: SimClock | None = None,
        precision: Precision = "ms",
        extra_fields: Mapping[str, Any] | None = None,
        tie_fraction: float = 0.1,
    ) -> None:
        if records_per_resource < 0:
            raise ValueError("records_per_resource must be >= 0")
        self._lock = threading.RLock()
        self.clock = clock if clock is not None else SimClock()
        self._precision: Precision = "ms"
        self.set_precision(precision)
        self._tie_fraction = tie_fraction
        self._extra: dict[str | None, dict[str, Any]] = {}
        self._corruptions: dict[tuple[str, str], _Corruption] = {}
        if extra_fields:
            self._extra[None] = dict(extra_fields)
        self._seed = seed
        self._records_per_resource = records_per_resource
        self._rng = random.Random(seed)
        self._stores: dict[str, _Store] = {}
        self._last_us = 0
        self._listeners: list[ChangeListener] = []
        self._generate()

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(resource, action, rendered_record, instant_us)`` after each change
        (``created``, ``updated``, ``deleted``; the deleted record as it was), under the
        dataset lock: a listener must only hand the change over (the webhook sender queues)."""
        with self._lock:
            self._listeners.append(listener)

    def _notify(self, resource: str, action: str, rec: StoredRecord, instant_us: int) -> None:
        if self._listeners:
            rendered = self._render(resource, rec)
            for listener in self._listeners:
                listener(resource, action, rendered, instant_us)

    # ------------------------------------------------------------------ configuration
    @property
    def seed(self) -> int:
        return self._seed

    @property
    def records_per_resource(self) -> int:
        return self._records_per_resource

    @property
    def precision(self) -> Precision:
        return self._precision

    def set_precision(self, precision: str) -> None:
        """Rendering precision of every date-time: ``s``, ``ms`` or ``us`` (storage is µs)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        with self._lock:
            self._precision = precision

    def set_extra_fields(
        self, fields: Mapping[str, Any] | None, resource: str | None = None
    ) -> None:
        """Add undocumented fields to every rendered record (of ``resource``, or of all).

        Extra fields never replace documented ones.  ``None``/``{}`` removes them again.
        """
        if resource is not None:
            _check_resource(resource)
        with self._lock:
            if fields:
                self._extra[resource] = dict(fields)
            else:
                self._extra.pop(resource, None)

    def extra_fields(self) -> dict[str | None, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._extra.items()}

    def reset(self, seed: int | None = None, records_per_resource: int | None = None) -> None:
        """Regenerate everything from ``seed`` (default: the current one) at the clock's now."""
        with self._lock:
            if seed is not None:
                self._seed = seed
            if records_per_resource is not None:
                if records_per_resource < 0:
                    raise ValueError("records_per_resource must be >= 0")
                self._records_per_resource = records_per_resource
            self._rng = random.Random(self._seed)
            self._generate()

    # ------------------------------------------------------------------ reading
    def count(self, resource: str, *, include_deleted: bool = False) -> int:
        _check_resource(resource)
        with self._lock:
            store = self._stores[resource]
            return len(store.records) if include_deleted else len(store.index)

    def ids(self, resource: str) -> list[str]:
        """Active ids in ascending (updated_at, id) order."""
        _check_resource(resource)
        with self._lock:
            return [key[1] for key in self._stores[resource].index]

    def deleted_ids(self, resource: str) -> list[str]:
        _check_resource(resource)
        with self._lock:
            store = self._stores[resource]
            return [i for i in store.all_ids if store.records[i].deleted_us is not None]

    def records(self, resource: str, *, expand: Sequence[str] = ()) -> list[dict[str, Any]]:
        """All active records, rendered (engagements with ``expand``), in ascending
        (updated_at, id) order."""
        _check_resource(resource)
        with self._lock:
            store = self._stores[resource]
            return [self._render(resource, store.records[key[1]], expand) for key in store.index]

    def get(
        self, resource: str, record_id: str, *, expand: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        """The rendered record, or ``None`` when unknown or soft-deleted."""
        _check_resource(resource)
        with self._lock:
            rec = self._stores[resource].records.get(record_id)
            if rec is None or rec.deleted_us is not None:
                return None
            return self._render(resource, rec, expand)

    def updated_at_us(self, resource: str, record_id: str) -> int:
        """Stored (µs) ``updated_at`` of a record (also of a soft-deleted one)."""
        _check_resource(resource)
        with self._lock:
            return self._stores[resource].records[record_id].updated_us

    def updated_at(self, resource: str, record_id: str) -> datetime:
        return from_us(self.updated_at_us(resource, record_id))

    def is_deleted(self, resource: str, record_id: str) -> bool:
        _check_resource(resource)
        with self._lock:
            return self._stores[resource].records[record_id].deleted_us is not None

    def page(
        self,
        resource: str,
        *,
        order: Order,
        filters: Mapping[str, int],
        after: SortKey | None,
        limit: int,
        where: Callable[[EngagementFacts], bool] | None = None,
        expand: Sequence[str] = (),
    ) -> Page:
        """One keyset page (simulator choice: order on (updated_at, id), tie-break on id).

        ``filters`` maps ``gt|gte|lt|lte`` to epoch µs and is compared at the stored
        (µs) precision (docs/askelephant-api.md §2.1 filter semantics).  ``after`` is the keyset of
        the last
        record already returned: the page starts strictly after it in the chosen order.
        ``where`` (engagements only) keeps the records whose facts it accepts; ``expand``
        adds the engagement expansions.
        """
        _check_resource(resource)
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if (where is not None or expand) and resource != "engagements":
            raise ValueError("where / expand apply to engagements only")
        with self._lock:
            index = self._stores[resource].index
            lo, hi = 0, len(index)
            # (v, "") sorts before every (v, id): ids are non-empty.
            if "gte" in filters:  # docs/askelephant-api.md §2.1: at or after
                lo = max(lo, bisect.bisect_left(index, (filters["gte"], "")))
            if "gt" in filters:  # docs/askelephant-api.md §2.1: strictly after
                lo = max(lo, bisect.bisect_left(index, (filters["gt"] + 1, "")))
            if "lt" in filters:  # docs/askelephant-api.md §2.1: strictly before
                hi = min(hi, bisect.bisect_left(index, (filters["lt"], "")))
            if "lte" in filters:  # docs/askelephant-api.md §2.1: at or before
                hi = min(hi, bisect.bisect_left(index, (filters["lte"] + 1, "")))
            records = self._stores[resource].records
            if order == "asc":
                if after is not None:
                    lo = max(lo, bisect.bisect_right(index, after))
            elif after is not None:
                hi = min(hi, bisect.bisect_left(index, after))
            if where is None:
                if order == "asc":
                    end = min(hi, lo + limit)
                    keys = index[lo:end] if lo < end else []
                    has_more = end < hi
                else:
                    start = max(lo, hi - limit)
                    keys = index[start:hi][::-1] if start < hi else []
                    has_more = start > lo
            else:
                # a scan in list order: one match past the page tells whether there is more
                span = range(lo, hi) if order == "asc" else range(hi - 1, lo - 1, -1)
                keys = []
                has_more = False
                for i in span:
                    if where(self._facts(records[index[i][1]])):
                        if len(keys) == limit:
                            has_more = True
                            break
                        keys.append(index[i])
            rendered = [self._render(resource, records[k[1]], expand) for k in keys]
            return Page(rendered, has_more, keys[-1] if keys else None)

    # ------------------------------------------------------------------ changes
    def mutate(self, resource: str, count: int = 1, *, same_timestamp: bool = False) -> list[str]:
        """Update ``count`` random active records (fewer if fewer exist); returns their ids.

        Each gets new field values and ``updated_at`` = now, strictly increasing; with
        ``same_timestamp=True`` they all share ONE new ``updated_at``.
        """
        _check_resource(resource)
        with self._lock:
            active = [key[1] for key in self._stores[resource].index]
            chosen = self._rng.sample(active, min(max(count, 0), len(active)))
            return self._update_locked(resource, chosen, same_timestamp)

    def update(
        self, resource: str, ids: Iterable[str], *, same_timestamp: bool = False
    ) -> list[str]:
        """Like :meth:`mutate` for the given active ids (``KeyError`` if unknown/deleted)."""
        _check_resource(resource)
        with self._lock:
            wanted = list(dict.fromkeys(ids))
            store = self._stores[resource]
            for rid in wanted:
                rec = store.records.get(rid)
                if rec is None or rec.deleted_us is not None:
                    raise KeyError(f"{resource}: no active record {rid!r}")
            return self._update_locked(resource, wanted, same_timestamp)

    def create(self, resource: str, count: int = 1, *, same_timestamp: bool = False) -> list[str]:
        """Create ``count`` new records (created_at = updated_at = now); returns their ids."""
        _check_resource(resource)
        with self._lock:
            shared = self._next_us() if same_timestamp else None
            out = []
            for _ in range(max(count, 0)):
                ts = shared if shared is not None else self._next_us()
                rec = self._new_record(resource, ts, ts)
                self._insert(resource, rec)
                self._notify(resource, "created", rec, ts)
                out.append(rec.id)
            return out

    def soft_delete(self, resource: str, ids: Iterable[str]) -> list[str]:
        """Soft-delete records: they drop out of list results and ``get`` (docs/askelephant-api.md
        §4.1).

        Returns the ids that were active and are now deleted (unknown ids are ignored).
        """
        _check_resource(resource)
        with self._lock:
            store = self._stores[resource]
            out = []
            now = self._next_us()
            for rid in dict.fromkeys(ids):
                rec = store.records.get(rid)
                if rec is None or rec.deleted_us is not None:
                    continue
                self._notify(resource, "deleted", rec, now)
                self._unindex(store, rec)
                rec.deleted_us = now
                out.append(rid)
            return out

    def delete_random(self, resource: str, count: int = 1) -> list[str]:
        """Soft-delete ``count`` random active records."""
        _check_resource(resource)
        with self._lock:
            active = [key[1] for key in self._stores[resource].index]
            chosen = self._rng.sample(active, min(max(count, 0), len(active)))
            return self.soft_delete(resource, chosen)

    def corrupt(
        self,
        resource: str,
        record_id: str,
        patch: Mapping[str, Any] | None = None,
        *,
        replace: Any = _KEEP,
    ) -> None:
        """Serve a record damaged, in its place in the list order: keys of ``patch`` set
        (``REMOVE`` deletes one), or the whole item replaced by ``replace`` (any JSON value).
        For testing what a consumer of the API does with bad data; ``repair`` undoes it."""
        _check_resource(resource)
        with self._lock:
            if record_id not in self._stores[resource].records:
                raise KeyError(f"{resource}: no record {record_id!r}")
            self._corruptions[(resource, record_id)] = _Corruption(dict(patch or {}), replace)

    def repair(self, resource: str, record_id: str) -> None:
        with self._lock:
            self._corruptions.pop((resource, record_id), None)

    # ------------------------------------------------------------------ internals
    def _next_us(self) -> int:
        """A new change timestamp: the clock's now, strictly after every earlier one."""
        ts = max(self.clock.now_us(), self._last_us + 1)
        self._last_us = ts
        return ts

    def _update_locked(self, resource: str, ids: Sequence[str], same_timestamp: bool) -> list[str]:
        store = self._stores[resource]
        shared = self._next_us() if same_timestamp and ids else None
        for rid in ids:
            rec = store.records[rid]
            ts = shared if shared is not None else self._next_us()
            self._unindex(store, rec)
            rec.fields = self._changed_fields(resource, rec)
            rec.updated_us = ts
            bisect.insort(store.index, rec.key)
            self._notify(resource, "updated", rec, ts)
        return list(ids)

    def _changed_fields(self, resource: str, rec: StoredRecord) -> dict[str, Any]:
        rng = self._rng
        mutable = MUTABLE_FIELDS[resource]
        new = dict(rec.fields)
        for _attempt in range(5):
            candidate = self._generate_fields(resource, rec.created_us, rec.id)
            for name in rng.sample(mutable, rng.randint(1, min(3, len(mutable)))):
                if name in candidate:
                    new[name] = candidate[name]
                else:
                    new.pop(name, None)
            if new != rec.fields:
                break
        return new

    def _unindex(self, store: _Store, rec: StoredRecord) -> None:
        pos = bisect.bisect_left(store.index, rec.key)
        if pos < len(store.index) and store.index[pos] == rec.key:
            del store.index[pos]

    def _insert(self, resource: str, rec: StoredRecord) -> None:
        store = self._stores[resource]
        store.records[rec.id] = rec
        store.all_ids.append(rec.id)
        bisect.insort(store.index, rec.key)

    def _new_id(self, resource: str, created_us: int) -> str:
        store = self._stores[resource]
        while True:
            rid = ID_PREFIX[resource] + ulid(created_us // 1000, self._rng.getrandbits(80))
            if rid not in store.records:
                return rid

    def _new_record(self, resource: str, created_us: int, updated_us: int) -> StoredRecord:
        rid = self._new_id(resource, created_us)
        return StoredRecord(
            rid, created_us, updated_us, self._generate_fields(resource, created_us, rid)
        )

    def _generate(self) -> None:
        self._stores = {r: _Store() for r in RESOURCES}
        now = self.clock.now_us()
        rng = self._rng
        n = self._records_per_resource
        # companies and users first: contacts and engagements reference them
        for resource in ("companies", "users", "tags", "contacts", "engagements"):
            recs: list[StoredRecord] = []
            for _ in range(n):
                created = now - rng.randint(2 * _DAY_US, 365 * _DAY_US)
                if rng.random() < 0.35:
                    updated = created  # never updated since creation
                else:
                    updated = rng.randint(created, now - 60 * _SECOND_US)
                recs.append(self._new_record(resource, created, updated))
                self._stores[resource].records[recs[-1].id] = recs[-1]
                self._stores[resource].all_ids.append(recs[-1].id)
            # ties: some records share an updated_at with another record (tie-break on id)
            for rec in recs:
                if len(recs) > 1 and rng.random() < self._tie_fraction:
                    other = rng.choice(recs)
                    rec.updated_us = other.updated_us
                    rec.created_us = min(rec.created_us, rec.updated_us)
            self._stores[resource].index = sorted(r.key for r in recs)
        self._last_us = max((s.index[-1][0] for s in self._stores.values() if s.index), default=0)

    # --------------------------------------------------------------- field generators
    def _generate_fields(self, resource: str, created_us: int, rid: str) -> dict[str, Any]:
        gen: Callable[[int, str], dict[str, Any]] = getattr(self, f"_gen_{resource}")
        return gen(created_us, rid)

    def _pick_ref(self, resource: str) -> str | None:
        ids = self._stores[resource].all_ids
        return self._rng.choice(ids) if ids else None

    def _person(self) -> tuple[str, str]:
        return self._rng.choice(_FIRST_NAMES), self._rng.choice(_LAST_NAMES)

    def _company_name(self) -> str:
        rng = self._rng
        return f"{rng.choice(_COMPANY_STEMS)} {rng.choice(_COMPANY_SUFFIXES)}"

    def _domain(self, name: str | None = None) -> str:
        rng = self._rng
        base = name if name is not None else rng.choice(_COMPANY_STEMS)
        slug = _ascii_slug(base) or "example"
        return f"{slug}{rng.choice(('', '-hq', 'group', ''))}.{rng.choice(_TLDS)}"

    def _emails(self, first: str | None, last: str | None, max_count: int) -> list[dict[str, Any]]:
        rng = self._rng
        local = (
            ".".join(_ascii_slug(p) for p in (first, last) if p) or f"user{rng.randint(1, 9999)}"
        )
        out: list[dict[str, Any]] = []
        for i in range(rng.randint(1, max_count)):
            domain = (
                self._domain() if i == 0 else rng.choice(("gmail.com", "outlook.com", "proton.me"))
            )
            # docs/askelephant-api.md §2.4 ContactEmailsItems: {email, is_primary}, both required
            out.append({"email": f"{local}@{domain}", "is_primary": i == 0})
        return out

    def _crm_association(self, object_types: Sequence[str]) -> dict[str, Any]:
        rng = self._rng
        object_type = rng.choice(object_types)
        crm_id = (
            f"deal_{rng.getrandbits(32):08x}"
            if object_type == "deal"
            else str(rng.randint(10**6, 10**11))
        )
        # docs/askelephant-api.md §2.4 "CRM association objects": [INFERRED] {object_type,
        # crm_object_id, source}
        return {
            "object_type": object_type,
            "crm_object_id": crm_id,
            "source": rng.choice(_CRM_SOURCES),
        }

    def _gen_contacts(self, created_us: int, rid: str) -> dict[str, Any]:
        rng = self._rng
        first, last = self._person()
        f: dict[str, Any] = {
            # docs/askelephant-api.md §2.4 Contact: first_name/last_name are `string | null` (always
            # present)
            "first_name": first if rng.random() < 0.92 else None,
            "last_name": last if rng.random() < 0.9 else None,
        }
        if rng.random() < 0.4:  # optional, omitted when empty
            f["description"] = rng.choice(_DESCRIPTIONS)
        company = self._pick_ref("companies")
        if company is not None and rng.random() < 0.7:
            # docs/askelephant-api.md §2.4: `company` is a resource_ref {id, object}
            f["company"] = {"id": company, "object": "company"}
        if rng.random() < 0.85:
            f["emails"] = self._emails(f["first_name"], f["last_name"], 3)
        if rng.random() < 0.5:
            # docs/askelephant-api.md §2.4: {phone_number, is_primary}; not guaranteed to be E.164
            fmt = rng.choice(
                (
                    "+1-555-{a:04d}",
                    "+1555{a:04d}{b:03d}",
                    "(555) {b:03d}-{a:04d}",
                    "+44 20 7946 {a:04d}",
                )
            )
            f["phone_numbers"] = [
                {
                    "phone_number": fmt.format(a=rng.randint(0, 9999), b=rng.randint(0, 999)),
                    "is_primary": i == 0,
                }
                for i in range(rng.randint(1, 2))
            ]
        if rng.random() < 0.5:
            f["crm_association"] = self._crm_association(("contact",))
        if rng.random() < 0.6:
            f["time_zone"] = rng.choice(_TIME_ZONES)
        return f

    def _gen_companies(self, created_us: int, rid: str) -> dict[str, Any]:
        rng = self._rng
        name = self._company_name()
        domain = self._domain(name.split(" ")[0])
        f: dict[str, Any] = {"name": name if rng.random() < 0.95 else None}  # string | null
        if rng.random() < 0.5:
            f["description"] = rng.choice(_DESCRIPTIONS)
        if rng.random() < 0.7:
            f["industry"] = rng.choice(_INDUSTRIES)
        if rng.random() < 0.75:
            f["website"] = f"https://www.{domain}"
        if rng.random() < 0.6:
            f["number_of_employees"] = rng.choice((1, 5, 12, 48, 150, 420, 1200, 8000, 120000))
        if rng.random() < 0.4:
            f["logo_url"] = f"https://logos.example.com/{domain}.png"
        if rng.random() < 0.8:
            # docs/askelephant-api.md §2.4 Company domains[]: item shape not visible; [INFERRED]
            # {domain, is_primary}
            extra = [self._domain() for _ in range(rng.randint(0, 2))]
            f["domains"] = [
                {"domain": d, "is_primary": i == 0}
                for i, d in enumerate(dict.fromkeys([domain, *extra]))
            ]
        if rng.random() < 0.5:
            f["crm_association"] = self._crm_association(("company",))
        return f

    def _gen_users(self, created_us: int, rid: str) -> dict[str, Any]:
        rng = self._rng
        first, last = self._person()
        now = max(self.clock.now_us(), created_us)
        f: dict[str, Any] = {
            "role": rng.choices(USER_ROLES, weights=(1, 3, 12, 2, 1))[0],
            "first_name": first if rng.random() < 0.97 else None,  # string | null
            "last_name": last if rng.random() < 0.95 else None,  # string | null
            "job_title": rng.choice(_JOB_TITLES),
            # docs/askelephant-api.md §2.4 User emails: item shape not visible; [INFERRED] like
            # contact emails
            "emails": self._emails(first, last, 2),
            "time_zone": rng.choice(_TIME_ZONES),
            # docs/askelephant-api.md §2.4: last_activity_at may change without bumping updated_at
            # (unknown)
            "last_activity_at": Ts(rng.randint(created_us, now)),
        }
        return f

    def _gen_tags(self, created_us: int, rid: str) -> dict[str, Any]:
        rng = self._rng
        uses = self._stores["tags"].name_uses
        base = rng.choice(_TAG_NAMES)
        uses[base] = uses.get(base, 0) + 1
        # docs/askelephant-api.md §2.4 Tag: create can 409, [INFERRED] on a duplicate name -> names
        # are unique
        name = base if uses[base] == 1 else f"{base} {uses[base]}"
        return {
            "name": name,
            # docs/askelephant-api.md §2.4 Tag: hex_color and description are `string | null`
            # (always present)
            "hex_color": f"#{rng.getrandbits(24):06X}" if rng.random() < 0.8 else None,
            "description": rng.choice(_DESCRIPTIONS) if rng.random() < 0.5 else None,
            "auto_tagging_enabled": rng.random() < 0.3,
        }

    def _gen_engagements(self, created_us: int, rid: str) -> dict[str, Any]:
        rng = self._rng
        etype = rng.choices(ENGAGEMENT_TYPES, weights=(10, 6, 4, 1, 1, 3, 1))[0]
        status = rng.choices(PROCESSING_STATUSES, weights=(1, 1, 12, 1))[0]
        start = created_us - rng.randint(0, 7 * _DAY_US)
        start -= start % _SECOND_US
        if etype in ("MEETING", "CALENDAR_EVENT"):
            duration = rng.randint(10, 90) * 60
        elif etype == "CALL":
            duration = rng.randint(30, 2400)
        else:
            duration = 0
        company = self._stores["companies"].all_ids
        title = rng.choice(_ENGAGEMENT_TITLES)
        if company and rng.random() < 0.5:
            title = f"{self._company_name().split(' ')[0]} <> AskElephant: {title}"
        f: dict[str, Any] = {
            "title": title,
            "engagement_type": etype,
            "processing_status": status,
            "is_private": rng.random() < 0.1,
        }
        if rng.random() < 0.3:
            f["description"] = rng.choice(_DESCRIPTIONS)
        f["data_source"] = rng.choice(_DATA_SOURCES)
        f["is_internal"] = rng.random() < 0.2
        f["engagement_at"] = Ts(start)
        f["start_at"] = Ts(start)
        f["end_at"] = Ts(start + duration * _SECOND_US)
        f["duration_seconds"] = duration
        if etype in ("MEETING", "CALENDAR_EVENT") and rng.random() < 0.8:
            f["meeting_url"] = rng.choice(
                (
                    f"https://zoom.us/j/{rng.randint(10**9, 10**10 - 1)}",
                    f"https://meet.google.com/{crockford(rng.getrandbits(50), 10).lower()}",
                    f"https://teams.microsoft.com/l/meetup-join/{rng.getrandbits(64):016x}",
                )
            )
        if rng.random() < 0.25:
            # docs/askelephant-api.md §2.4: external_url accepts https://, http:// and custom
            # schemes (wavv://)
            f["external_url"] = (
                f"wavv://call/{rng.randint(1, 10**6)}"
                if etype == "CALL"
                else f"https://crm.example.com/activities/{rng.randint(1, 10**6)}"
            )
        if rng.random() < 0.4:
            # docs/askelephant-api.md §2.2: CRM object types for engagements: company, contact, deal
            f["crm_association"] = self._crm_association(("company", "contact", "deal"))
        owner = self._pick_ref("users")
        f["owner_user_id"] = owner if owner is not None else "usr_" + ulid(0, rng.getrandbits(80))
        host = self._pick_ref("users")
        if host is not None and rng.random() < 0.5:
            f["host_user_id"] = host
        f.update(self._engagement_links(rid))
        return f

    def _engagement_links(self, rid: str) -> dict[str, list[str]]:
        """The companies, contacts and tags an engagement is linked to (what ``expand`` and the
        filters see).  Hidden fields (``_`` names are never rendered) drawn from a generator of
        their own, so that adding them left every other seeded value as it was."""
        rng = random.Random(f"{self._seed}:links:{rid}")
        contacts = self._stores["contacts"]
        picked = rng.sample(contacts.all_ids, min(len(contacts.all_ids), rng.randint(0, 5)))
        # the participants' companies, and sometimes one more (a partner on the call)
        companies = [
            ref["id"]
            for ref in (contacts.records[c].fields.get("company") for c in picked)
            if isinstance(ref, dict)
        ]
        more = self._stores["companies"].all_ids
        if more and (not companies or rng.random() < 0.2):
            companies.append(rng.choice(more))
        tags = self._stores["tags"].all_ids
        return {
            "_contact_ids": picked,
            "_company_ids": list(dict.fromkeys(companies)),
            "_tag_ids": rng.sample(tags, min(len(tags), rng.choice((0, 0, 1, 1, 2, 3)))),
        }

    def _active_fields(self, resource: str, record_id: str) -> dict[str, Any] | None:
        rec = self._stores[resource].records.get(record_id)
        return None if rec is None or rec.deleted_us is not None else rec.fields

    def _facts(self, rec: StoredRecord) -> EngagementFacts:
        """What the engagement filters look at (docs/simulator.md, "Engagement filters")."""
        f = rec.fields
        companies = frozenset(c for c in f["_company_ids"] if self._active_fields("companies", c))
        contacts = frozenset(c for c in f["_contact_ids"] if self._active_fields("contacts", c))
        crm = set()
        linked = [f, *(self._active_fields("companies", c) for c in companies)]
        linked += [self._active_fields("contacts", c) for c in contacts]
        for fields in linked:
            assoc = fields.get("crm_association") if fields else None
            if isinstance(assoc, dict):
                crm.add((str(assoc.get("object_type")), str(assoc.get("crm_object_id"))))
        return EngagementFacts(
            f["engagement_type"],
            f["processing_status"],
            f["start_at"].us,
            companies,
            contacts,
            frozenset(crm),
        )

    def _lookup(self, resource: str, record_id: str) -> dict[str, Any] | None:
        rec = self._stores[resource].records.get(record_id)
        return None if rec is None or rec.deleted_us is not None else self._render(resource, rec)

    # --------------------------------------------------------------- rendering
    def _render(
        self, resource: str, rec: StoredRecord, expand: Sequence[str] = ()
    ) -> dict[str, Any]:
        p = self._precision
        out: dict[str, Any] = {"object": OBJECT_TYPE[resource], "id": rec.id}
        for name in FIELD_ORDER[resource]:
            if name in rec.fields:
                out[name] = _render_value(rec.fields[name], p)
        out["created_at"] = format_ts(rec.created_us, p)
        out["updated_at"] = format_ts(rec.updated_us, p)
        if expand:
            extra = render_expansions(
                self._seed, rec.id, rec.fields, expand, self._lookup, self.clock.now_us()
            )
            out.update(_render_value(extra, p))
        for scope in (None, resource):
            for k, v in self._extra.get(scope, {}).items():
                if k not in out:
                    out[k] = _render_value(v, p)
        corruption = self._corruptions.get((resource, rec.id))
        if corruption is None:
            return out
        if corruption.replace is not _KEEP:
            return corruption.replace  # type: ignore[no-any-return]
        for k, v in corruption.patch.items():
            if v is REMOVE:
                out.pop(k, None)
            else:
                out[k] = v
        return out


def _render_value(value: Any, precision: Precision) -> Any:
    if isinstance(value, Ts):
        return format_ts(value.us, precision)
    if isinstance(value, dict):
        return {k: _render_value(v, precision) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, precision) for v in value]
    return value

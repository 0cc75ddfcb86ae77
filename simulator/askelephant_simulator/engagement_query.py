"""`GET /v2/engagements` filters and `expand`: parsing, the canonical query shape, matching.

docs/askelephant-api.md §2.2 lists the engagement filters and the "MCP-style bucket
semantics": values inside one bucket are ORed, populated buckets are ANDed.  The buckets:

- type: ``filter[engagement_type][eq|in]``
- status: ``filter[processing_status][eq|in]``
- company: ``filter[company_ids][eq|in]`` plus CRM associations of ``object_type`` company
- participant: ``filter[contact_ids][eq|in]`` plus CRM associations of ``object_type`` contact
- project: CRM associations of ``object_type`` deal
- start time: ``filter[start_at][gt|gte|lt|lte]`` (each operator narrows, like updated_at)

Errors (docs/askelephant-api.md §3.2: a malformed query parameter is a 400; the §3.1 worked
example answers a count/range rule with a 422): an unknown filter, an unknown operator, a
malformed value or syntax is a 400 naming the parameter; more values than allowed (25 per
``[eq|in]`` list, 20 CRM objects) is a 422 ``validation_failed`` / ``too_many_values``.
The codes are simulator choices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from askelephant_simulator.clock import parse_ts
from askelephant_simulator.problems import ProblemError, bad_parameter

ENGAGEMENT_TYPES: Final = ("MEETING", "CALL", "EMAIL", "TASK", "NOTE", "CALENDAR_EVENT", "DOCUMENT")
PROCESSING_STATUSES: Final = ("PENDING", "PROCESSING", "COMPLETED", "FAILED")

# docs/askelephant-api.md §2.2: the list endpoint's expand values (/searching-engagements lists
# all of these but action_items, which get-by-id documents; the simulator serves it on both).
EXPAND_VALUES: Final = (
    "companies",
    "contacts",
    "owner",
    "action_items",
    "signals",
    "transcript",
    "media_url",
    "tags",
)
# docs/askelephant-api.md §2.2: company_ids up to 25; the same for the other lists (inferred)
MAX_IN_VALUES: Final = 25
MAX_CRM_OBJECTS: Final = 20  # docs/askelephant-api.md §2.2: up to 20 objects per request
CRM_OBJECT_TYPES: Final = ("company", "contact", "deal")  # §2.2, for engagements
RANGE_OPS: Final = ("gt", "gte", "lt", "lte")

_LIST_FIELDS: Final[Mapping[str, tuple[str, re.Pattern[str] | tuple[str, ...]]]] = {
    "engagement_type": ("invalid_enum", ENGAGEMENT_TYPES),
    "processing_status": ("invalid_enum", PROCESSING_STATUSES),
    # docs/askelephant-api.md §2.4 ID formats
    "company_ids": ("invalid_id", re.compile(r"^cmp_[A-Za-z0-9]+$")),
    "contact_ids": ("invalid_id", re.compile(r"^cnt_[A-Za-z0-9]+$")),
}
_NAME_RE: Final = re.compile(r"^filter\[([a-z_]+)\]\[([a-z]+)\]((?:\[[^\[\]]*\])*)$")
_CRM_ITEM_RE: Final = re.compile(r"^\[(\d{1,6})\]\[(id|object_type)\]$")
_CRM_FIELD: Final = "filter[crm_associations][eq]"


def is_engagement_param(name: str) -> bool:
    """A parameter this module owns on `/v2/engagements` (updated_at stays with listing)."""
    return name == "expand" or (
        name.startswith("filter[") and not name.startswith("filter[updated_at]")
    )


@dataclass(frozen=True)
class EngagementFacts:
    """What the filters look at in one engagement (built by the dataset)."""

    engagement_type: str
    processing_status: str
    start_us: int
    company_ids: frozenset[str]  # linked companies that still exist
    contact_ids: frozenset[str]  # linked contacts that still exist
    crm: frozenset[tuple[str, str]]
    """(object_type, crm_object_id) of the engagement's own CRM association and of those of its
    linked companies and contacts (simulator choice: a CRM company filter finds the meetings of
    that company, as the docs' "filtering engagements by CRM object ids" page implies)."""


@dataclass(frozen=True)
class EngagementQuery:
    """The canonical (order-free, duplicate-free) engagement filters and expansions.

    ``[eq]`` and ``[in]`` of one field are one bucket, so ``eq=CALL`` and ``in=CALL`` are the
    same query shape (cursors compare shapes by meaning, not by spelling).
    """

    engagement_types: frozenset[str] = frozenset()
    processing_statuses: frozenset[str] = frozenset()
    company_ids: frozenset[str] = frozenset()
    contact_ids: frozenset[str] = frozenset()
    crm: frozenset[tuple[str, str]] = frozenset()  # (object_type, id)
    start_at: tuple[tuple[str, int], ...] = ()  # (operator, epoch µs), sorted
    expand: tuple[str, ...] = ()  # in EXPAND_VALUES order

    def to_json(self) -> dict[str, Any]:
        return {
            "engagement_type": sorted(self.engagement_types),
            "processing_status": sorted(self.processing_statuses),
            "company_ids": sorted(self.company_ids),
            "contact_ids": sorted(self.contact_ids),
            "crm": sorted([t, i] for t, i in self.crm),
            "start_at": [[op, us] for op, us in self.start_at],
            "expand": list(self.expand),
        }

    @classmethod
    def from_json(cls, data: Any) -> EngagementQuery:
        """The inverse of :meth:`to_json`; ``ValueError`` for anything else."""
        if not isinstance(data, dict) or set(data) != set(cls().to_json()):
            raise ValueError("not an engagement query")

        def strings(key: str) -> frozenset[str]:
            value = data[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(key)
            return frozenset(value)

        crm = data["crm"]
        start = data["start_at"]
        if not (
            isinstance(crm, list)
            and all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p)
                for p in crm
            )
            and isinstance(start, list)
            and all(
                isinstance(p, list)
                and len(p) == 2
                and p[0] in RANGE_OPS
                and isinstance(p[1], int)
                and not isinstance(p[1], bool)
                for p in start
            )
        ):
            raise ValueError("crm / start_at")
        expand = tuple(strings("expand"))
        if not set(expand) <= set(EXPAND_VALUES):
            raise ValueError("expand")
        return cls(
            strings("engagement_type"),
            strings("processing_status"),
            strings("company_ids"),
            strings("contact_ids"),
            frozenset((t, i) for t, i in crm),
            tuple(sorted((op, us) for op, us in start)),
            tuple(v for v in EXPAND_VALUES if v in expand),
        )

    @property
    def filters_anything(self) -> bool:
        return bool(
            self.engagement_types
            or self.processing_statuses
            or self.company_ids
            or self.contact_ids
            or self.crm
            or self.start_at
        )

    def crm_of(self, object_type: str) -> frozenset[tuple[str, str]]:
        return frozenset(p for p in self.crm if p[0] == object_type)

    def matches(self, facts: EngagementFacts) -> bool:
        """Bucket semantics: OR inside a bucket, AND across the populated ones."""
        if self.engagement_types and facts.engagement_type not in self.engagement_types:
            return False
        if self.processing_statuses and facts.processing_status not in self.processing_statuses:
            return False
        for ids, linked, object_type in (
            (self.company_ids, facts.company_ids, "company"),
            (self.contact_ids, facts.contact_ids, "contact"),
            (frozenset[str](), frozenset[str](), "deal"),
        ):
            crm = self.crm_of(object_type)
            if (ids or crm) and not (ids & linked or crm & facts.crm):
                return False
        return all(_in_range(facts.start_us, op, us) for op, us in self.start_at)


def _in_range(value: int, op: str, bound: int) -> bool:
    if op == "gt":
        return value > bound
    if op == "gte":
        return value >= bound
    if op == "lt":
        return value < bound
    return value <= bound


def too_many(name: str, limit: int, what: str) -> ProblemError:
    """422 for a count rule, like the docs' `limit` range example (§3.1)."""
    return ProblemError(
        422,
        "validation_failed",
        "The request contains invalid fields.",
        title="Validation Failed",
        errors=[{"field": name, "code": "too_many_values", "message": f"at most {limit} {what}."}],
    )


def parse_engagement_query(params: Mapping[str, str]) -> EngagementQuery:
    """The engagement filters and ``expand`` among ``params`` (names already de-duplicated;
    only the names :func:`is_engagement_param` accepts are looked at)."""
    lists: dict[str, set[str]] = {field: set() for field in _LIST_FIELDS}
    start_at: dict[str, int] = {}
    crm_json: list[tuple[str, str]] | None = None
    crm_items: dict[int, dict[str, str]] = {}
    expand: tuple[str, ...] = ()
    for name, value in params.items():
        if not is_engagement_param(name):
            continue
        if name == "expand":
            expand = parse_expand(value)
            continue
        m = _NAME_RE.match(name)
        if m is None:
            raise bad_parameter(name, "unknown_filter", f"{name} is not a filter of this API.")
        field, op, rest = m.groups()
        if field in _LIST_FIELDS:
            _no_suffix(name, rest)
            lists[field].update(_parse_list(name, field, op, value))
        elif field == "start_at":
            _no_suffix(name, rest)
            if op not in RANGE_OPS:
                raise bad_parameter(
                    name, "invalid_operator", f"supported operators: {', '.join(RANGE_OPS)}."
                )
            start_at[op] = _parse_instant(name, value)
        elif field == "crm_associations":
            if op != "eq":
                raise bad_parameter(name, "invalid_operator", "supported operators: eq.")
            if rest:
                _add_crm_item(name, rest, value, crm_items)
            else:
                crm_json = _parse_crm_json(name, value)
        else:
            raise bad_parameter(
                name, "unknown_filter", f"filter[{field}] is not a filter of /v2/engagements."
            )
    crm = _crm_objects(crm_json, crm_items)
    return EngagementQuery(
        frozenset(lists["engagement_type"]),
        frozenset(lists["processing_status"]),
        frozenset(lists["company_ids"]),
        frozenset(lists["contact_ids"]),
        crm,
        tuple(sorted(start_at.items())),
        expand,
    )


def _no_suffix(name: str, rest: str) -> None:
    if rest:
        raise bad_parameter(name, "unknown_filter", f"{name} is not a filter of this API.")


def parse_expand(value: str) -> tuple[str, ...]:
    """A comma-separated ``expand`` value as a tuple in :data:`EXPAND_VALUES` order."""
    if not value.strip():
        return ()  # simulator choice: an empty `expand=` expands nothing
    items = [v.strip() for v in value.split(",")]
    unknown = [v for v in items if v not in EXPAND_VALUES]
    if unknown:
        raise bad_parameter(
            "expand",
            "invalid_expand",
            f"unknown expand value {unknown[0]!r}; expected a comma-separated list of "
            f"{', '.join(EXPAND_VALUES)}.",
        )
    return tuple(v for v in EXPAND_VALUES if v in items)


def _parse_list(name: str, field: str, op: str, value: str) -> list[str]:
    if op not in ("eq", "in"):
        raise bad_parameter(name, "invalid_operator", "supported operators: eq, in.")
    values = [v.strip() for v in value.split(",")] if op == "in" else [value.strip()]
    if op == "eq" and "," in value:
        raise bad_parameter(name, "invalid_value", f"{name} takes one value; use [in] for more.")
    if len(values) > MAX_IN_VALUES:
        raise too_many(name, MAX_IN_VALUES, "comma-separated values")
    code, rule = _LIST_FIELDS[field]
    for v in values:
        if not v:
            raise bad_parameter(name, "invalid_value", f"{name} has an empty value.")
        ok = v in rule if isinstance(rule, tuple) else rule.match(v) is not None
        if not ok:
            expected = (
                f"one of {', '.join(rule)}" if isinstance(rule, tuple) else f"like {rule.pattern}"
            )
            raise bad_parameter(name, code, f"{name}: {v!r} is not valid; expected {expected}.")
    return values


def _parse_instant(name: str, value: str) -> int:
    try:
        return parse_ts(value)
    except ValueError:
        raise bad_parameter(
            name, "invalid_datetime", f"{name} must be an ISO-8601 UTC date-time."
        ) from None


def _crm_object(name: str, object_type: Any, crm_id: Any) -> tuple[str, str]:
    if not isinstance(object_type, str) or object_type not in CRM_OBJECT_TYPES:
        raise bad_parameter(
            name,
            "invalid_enum",
            f"{name}: object_type must be one of {', '.join(CRM_OBJECT_TYPES)}.",
        )
    if not isinstance(crm_id, str) or not 1 <= len(crm_id) <= 255:
        raise bad_parameter(name, "invalid_value", f"{name}: id must be a string of 1-255.")
    return object_type, crm_id


def _parse_crm_json(name: str, value: str) -> list[tuple[str, str]]:
    """docs/askelephant-api.md §2.2: a JSON-encoded array of ``{id, object_type}``."""
    try:
        items = json.loads(value)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and set(i) == {"id", "object_type"} for i in items
    ):
        raise bad_parameter(
            name,
            "invalid_value",
            f"{name} must be a JSON array of {{id, object_type}} objects or use the indexed "
            f"bracket syntax {name}[0][id]=...",
        )
    if len(items) > MAX_CRM_OBJECTS:
        raise too_many(name, MAX_CRM_OBJECTS, "CRM objects")
    return [_crm_object(name, i["object_type"], i["id"]) for i in items]


def _add_crm_item(name: str, rest: str, value: str, items: dict[int, dict[str, str]]) -> None:
    """docs/askelephant-api.md §2.2 bracket form:
    ``...[eq][0][id]=...&...[eq][0][object_type]=...``."""
    m = _CRM_ITEM_RE.match(rest)
    if m is None:
        raise bad_parameter(
            name, "invalid_parameter", f"expected {_CRM_FIELD}[<index>][id|object_type]."
        )
    items.setdefault(int(m.group(1)), {})[m.group(2)] = value


def _crm_objects(
    from_json: list[tuple[str, str]] | None, items: dict[int, dict[str, str]]
) -> frozenset[tuple[str, str]]:
    if from_json is not None and items:
        raise bad_parameter(
            _CRM_FIELD, "invalid_parameter", "use either the JSON array or the bracket syntax."
        )
    if from_json is not None:
        return frozenset(from_json)
    if len(items) > MAX_CRM_OBJECTS:
        raise too_many(_CRM_FIELD, MAX_CRM_OBJECTS, "CRM objects")
    out: list[tuple[str, str]] = []
    for index in sorted(items):
        item = items[index]
        name = f"{_CRM_FIELD}[{index}]"
        if set(item) != {"id", "object_type"}:
            raise bad_parameter(name, "invalid_value", f"{name} needs both [id] and [object_type].")
        out.append(_crm_object(name, item["object_type"], item["id"]))
    return frozenset(out)

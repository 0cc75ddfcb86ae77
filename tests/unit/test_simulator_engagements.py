"""`GET /v2/engagements` filters and `expand` on the simulator, through real HTTP.

The bucket semantics and the value limits are property-tested against a reference model
that filters the dataset's records directly (written here, independently of
``askelephant_simulator.engagement_query``), over every page the simulator serves.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from askelephant_simulator import (
    ENGAGEMENT_TYPES,
    EXPAND_VALUES,
    PROCESSING_STATUSES,
    EngagementQuery,
    Simulator,
)
from askelephant_simulator.clock import parse_ts
from askelephant_simulator.expansions import transcript_segments, transcript_text
from askelephant_simulator.listing import QueryShape

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
CRM = "filter[crm_associations][eq]"
LINE_RE = re.compile(
    r"^\[(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\] ([^:]+): (.+)$"
)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(seed=5, records_per_resource=90, now=NOW) as s:
        yield s


@pytest.fixture(scope="module")
def client(sim: Simulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sim.base_url, headers={"Authorization": sim.api_key}, timeout=30
    ) as c:
        yield c


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    item: dict[str, Any] = r.json()["errors"][0]
    return item


# ----------------------------------------------------------------------------- reference model
@dataclass(frozen=True)
class Row:
    id: str
    key: tuple[int, str]  # (updated_at µs, id): the list order
    engagement_type: str
    processing_status: str
    start_us: int
    companies: frozenset[str]
    contacts: frozenset[str]
    crm: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Query:
    types: frozenset[str]
    statuses: frozenset[str]
    company_ids: frozenset[str]
    contact_ids: frozenset[str]
    crm: frozenset[tuple[str, str]]
    start_at: dict[str, int]


def crm_pair(record: dict[str, Any] | None) -> set[tuple[str, str]]:
    assoc = (record or {}).get("crm_association")
    return {(assoc["object_type"], assoc["crm_object_id"])} if assoc else set()


@pytest.fixture(scope="module")
def rows(sim: Simulator) -> list[Row]:
    """Every engagement as the public records show it: its own fields, its expanded companies
    and contacts, and the CRM associations of those (read with get-by-id)."""
    ds = sim.dataset
    out = []
    for e in ds.records("engagements", expand=("companies", "contacts")):
        companies = frozenset(c["id"] for c in e["companies"])
        contacts = frozenset(c["id"] for c in e["contacts"])
        crm = crm_pair(e)
        for c in companies:
            crm |= crm_pair(ds.get("companies", c))
        for c in contacts:
            crm |= crm_pair(ds.get("contacts", c))
        out.append(
            Row(
                e["id"],
                (ds.updated_at_us("engagements", e["id"]), e["id"]),
                e["engagement_type"],
                e["processing_status"],
                parse_ts(e["start_at"]),
                companies,
                contacts,
                frozenset(crm),
            )
        )
    return out


def expected(rows: list[Row], q: Query, order: str) -> list[str]:
    def bucket(values: frozenset[str], linked: frozenset[str], crm_type: str, row: Row) -> bool:
        wanted_crm = {p for p in q.crm if p[0] == crm_type}
        if not values and not wanted_crm:
            return True  # an empty bucket does not filter
        return bool(values & linked) or bool(wanted_crm & row.crm)

    def keep(r: Row) -> bool:
        checks = [
            not q.types or r.engagement_type in q.types,
            not q.statuses or r.processing_status in q.statuses,
            bucket(q.company_ids, r.companies, "company", r),
            bucket(q.contact_ids, r.contacts, "contact", r),
            bucket(frozenset(), frozenset(), "deal", r),
            "gt" not in q.start_at or r.start_us > q.start_at["gt"],
            "gte" not in q.start_at or r.start_us >= q.start_at["gte"],
            "lt" not in q.start_at or r.start_us < q.start_at["lt"],
            "lte" not in q.start_at or r.start_us <= q.start_at["lte"],
        ]
        return all(checks)

    kept = sorted((r for r in rows if keep(r)), key=lambda r: r.key, reverse=order == "desc")
    return [r.id for r in kept]


def serve_all(
    client: httpx.Client, params: dict[str, str], limit: int, *, resend: bool
) -> list[str]:
    """Every page of the query, following next_cursor (re-sending the query, or not)."""
    ids: list[str] = []
    query = {**params, "limit": str(limit)}
    for _ in range(500):
        r = client.get("/v2/engagements", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= limit
        ids += [e["id"] for e in body["data"]]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return ids
        base = {**params, "limit": str(limit)} if resend else {"limit": str(limit)}
        query = {**base, "cursor": body["next_cursor"]}
    raise AssertionError("no last page")


# ----------------------------------------------------------------------------- strategies
@st.composite
def list_params(
    draw: st.DrawFn, field: str, values: list[str], anchor: frozenset[str]
) -> tuple[frozenset[str], dict[str, str]]:
    """Values of one list filter (often none; often including one of ``anchor``, the values of
    one engagement, so that queries match something), spelled [eq], [in] or both (the bucket
    is their union)."""
    if draw(st.integers(0, 2)) != 0:
        return frozenset(), {}
    chosen = draw(st.lists(st.sampled_from(values), max_size=4))
    if anchor and draw(st.booleans()):
        chosen.insert(draw(st.integers(0, len(chosen))), draw(st.sampled_from(sorted(anchor))))
    if not chosen:
        return frozenset(), {}
    spelling = draw(st.sampled_from(["eq+in", "in"] if len(chosen) > 1 else ["eq", "in"]))
    if spelling == "eq":
        return frozenset(chosen), {f"filter[{field}][eq]": chosen[0]}
    if spelling == "in":
        return frozenset(chosen), {f"filter[{field}][in]": ",".join(chosen)}
    return frozenset(chosen), {
        f"filter[{field}][eq]": chosen[0],
        f"filter[{field}][in]": ",".join(chosen[1:]),
    }


def crm_params(objects: list[tuple[str, str]], syntax: str) -> dict[str, str]:
    if not objects:
        return {}
    if syntax == "json":
        return {CRM: json.dumps([{"id": i, "object_type": t} for t, i in objects])}
    out = {}
    for n, (t, i) in enumerate(objects):
        out[f"{CRM}[{n}][id]"] = i
        out[f"{CRM}[{n}][object_type]"] = t
    return out


def pools(rows: list[Row]) -> dict[str, list[Any]]:
    """Values that occur in the data (so that filters match), plus some that never do."""
    return {
        "company_ids": [*sorted({c for r in rows for c in r.companies}), "cmp_NOSUCH0000"],
        "contact_ids": [*sorted({c for r in rows for c in r.contacts}), "cnt_NOSUCH0000"],
        "crm": [*sorted({p for r in rows for p in r.crm}), ("deal", "deal_none"), ("company", "0")],
        "starts": sorted({r.start_us for r in rows}),
    }


# ----------------------------------------------------------------------------- properties
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_filters_serve_what_the_reference_model_keeps_across_all_pages(
    client: httpx.Client, rows: list[Row], data: st.DataObject
) -> None:
    pool = pools(rows)
    anchor = data.draw(st.sampled_from(rows), label="anchor")
    params: dict[str, str] = {}
    buckets = {}
    for field, values, own in (
        ("engagement_type", list(ENGAGEMENT_TYPES), frozenset([anchor.engagement_type])),
        ("processing_status", list(PROCESSING_STATUSES), frozenset([anchor.processing_status])),
        ("company_ids", pool["company_ids"], anchor.companies),
        ("contact_ids", pool["contact_ids"], anchor.contacts),
    ):
        buckets[field], spelled = data.draw(list_params(field, values, own), label=field)
        params.update(spelled)
    crm_pool = st.sampled_from(pool["crm"] + sorted(anchor.crm) * 3)
    crm = data.draw(st.lists(crm_pool, max_size=3, unique=True), label="crm")
    params.update(crm_params(crm, data.draw(st.sampled_from(["json", "brackets"]))))
    start_at = data.draw(
        st.dictionaries(
            st.sampled_from(["gt", "gte", "lt", "lte"]),
            st.sampled_from(pool["starts"]),
            max_size=2,
        ),
        label="start_at",
    )
    for op, us in start_at.items():
        params[f"filter[start_at][{op}]"] = datetime.fromtimestamp(us / 1e6, UTC).isoformat()
    order = data.draw(st.sampled_from(["asc", "desc"]))
    params["order_by"] = f"updated_at:{order}"
    if data.draw(st.booleans(), label="expand"):
        params["expand"] = "companies,tags"  # an expansion changes no membership
    query = Query(
        buckets["engagement_type"],
        buckets["processing_status"],
        buckets["company_ids"],
        buckets["contact_ids"],
        frozenset(crm),
        start_at,
    )
    limit = data.draw(st.integers(3, 30), label="limit")
    served = serve_all(client, params, limit, resend=data.draw(st.booleans(), label="resend"))
    want = expected(rows, query, order)
    event("nothing matches" if not want else "one page" if len(want) <= limit else "pages")
    assert served == want


@settings(max_examples=40, deadline=None)
@given(
    field=st.sampled_from(["engagement_type", "processing_status", "company_ids", "contact_ids"]),
    count=st.integers(1, 40),
)
def test_at_most_25_values_per_list(client: httpx.Client, field: str, count: int) -> None:
    valid = {
        "engagement_type": list(ENGAGEMENT_TYPES),
        "processing_status": list(PROCESSING_STATUSES),
        "company_ids": [f"cmp_A{i}" for i in range(40)],
        "contact_ids": [f"cnt_A{i}" for i in range(40)],
    }[field]
    values = [valid[i % len(valid)] for i in range(count)]
    name = f"filter[{field}][in]"
    r = client.get("/v2/engagements", params={name: ",".join(values)})
    if count <= 25:
        assert r.status_code == 200, r.text
    else:
        item = error(r, 422)
        assert (item["field"], item["code"]) == (name, "too_many_values")


@settings(max_examples=30, deadline=None)
@given(count=st.integers(0, 26), syntax=st.sampled_from(["json", "brackets"]))
def test_at_most_20_crm_objects(client: httpx.Client, count: int, syntax: str) -> None:
    objects = [("deal", f"deal_{i}") for i in range(count)]
    params = crm_params(objects, syntax) if count or syntax == "brackets" else {CRM: "[]"}
    r = client.get("/v2/engagements", params=params)
    if count <= 20:
        assert r.status_code == 200, r.text
        assert r.json()["data"] == [] or count == 0
    else:
        item = error(r, 422)
        assert (item["field"], item["code"]) == (CRM, "too_many_values")


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"filter[owner_ids][eq]": "usr_1"}, "filter[owner_ids][eq]", "unknown_filter"),
        ({"filter[engagement_type]": "CALL"}, "filter[engagement_type]", "unknown_filter"),
        ({"filter[engagement_type][eq][0]": "CALL"}, None, "unknown_filter"),
        ({"filter[engagement_type][ne]": "CALL"}, None, "invalid_operator"),
        ({"filter[start_at][eq]": "2026-01-01T00:00:00Z"}, None, "invalid_operator"),
        ({"filter[crm_associations][in]": "[]"}, None, "invalid_operator"),
        ({"filter[engagement_type][eq]": "call"}, None, "invalid_enum"),
        ({"filter[processing_status][in]": "COMPLETED,DONE"}, None, "invalid_enum"),
        ({"filter[company_ids][eq]": "cnt_01ABC"}, None, "invalid_id"),
        ({"filter[contact_ids][in]": "cnt_1,cnt-2"}, None, "invalid_id"),
        ({"filter[company_ids][eq]": "cmp_1,cmp_2"}, None, "invalid_value"),
        ({"filter[contact_ids][in]": "cnt_1,,cnt_2"}, None, "invalid_value"),
        ({"filter[start_at][gt]": "yesterday"}, None, "invalid_datetime"),
        ({CRM: "not json"}, CRM, "invalid_value"),
        ({CRM: '{"id": "1", "object_type": "deal"}'}, CRM, "invalid_value"),
        ({CRM: '[{"id": "1", "object_type": "ticket"}]'}, CRM, "invalid_enum"),
        ({CRM: '[{"id": "", "object_type": "deal"}]'}, CRM, "invalid_value"),
        ({f"{CRM}[0][id]": "1"}, f"{CRM}[0]", "invalid_value"),
        ({f"{CRM}[0][name]": "1"}, None, "invalid_parameter"),
        ({CRM: "[]", f"{CRM}[0][id]": "1", f"{CRM}[0][object_type]": "deal"}, CRM, None),
        ({"expand": "transcript,recording"}, "expand", "invalid_expand"),
        ({"search": "demo"}, "search", "unsupported_by_simulator"),
    ],
)
def test_malformed_engagement_queries_are_400(
    client: httpx.Client, params: dict[str, str], field: str | None, code: str | None
) -> None:
    item = error(client.get("/v2/engagements", params=params), 400)
    assert item["field"] == (field or next(iter(params)))
    assert code is None or item["code"] == code


def test_engagement_filters_are_unknown_on_other_resources(client: httpx.Client) -> None:
    item = error(client.get("/v2/contacts", params={"filter[engagement_type][eq]": "CALL"}), 400)
    assert item["code"] == "unsupported_by_simulator"
    item = error(client.get("/v2/contacts", params={"expand": "owner"}), 400)
    assert item["code"] == "unsupported_by_simulator"


# ----------------------------------------------------------------------------- cursors
def first_cursor(client: httpx.Client, params: dict[str, str]) -> str:
    body = client.get("/v2/engagements", params={**params, "limit": "2"}).json()
    assert body["has_more"], body
    cursor: str = body["next_cursor"]
    return cursor


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"filter[engagement_type][in]": "MEETING,CALL"}, {"filter[engagement_type][eq]": "CALL"}),
        ({"filter[engagement_type][in]": "MEETING,CALL"}, {"expand": "owner"}),
        ({"expand": "transcript"}, {"expand": "tags"}),
        ({"expand": "transcript"}, {"expand": "transcript", "order_by": "updated_at:asc"}),
        ({}, {"filter[start_at][gte]": "2000-01-01T00:00:00Z"}),
        (
            {"filter[engagement_type][in]": "MEETING,CALL", "expand": "owner"},
            {"filter[engagement_type][in]": "MEETING,CALL"},
        ),
    ],
)
def test_a_cursor_is_refused_with_another_query_shape(
    client: httpx.Client, first: dict[str, str], second: dict[str, str]
) -> None:
    cursor = first_cursor(client, first)
    item = error(client.get("/v2/engagements", params={**second, "cursor": cursor}), 400)
    assert (item["field"], item["code"]) == ("cursor", "cursor_mismatch")


def test_a_cursor_alone_continues_its_own_shape(client: httpx.Client) -> None:
    params = {"filter[engagement_type][in]": "MEETING,CALL", "expand": "owner,tags"}
    cursor = first_cursor(client, params)
    body = client.get("/v2/engagements", params={"cursor": cursor, "limit": "50"}).json()
    assert body["data"]
    for e in body["data"]:
        assert e["engagement_type"] in ("MEETING", "CALL")
        assert "owner" in e
        assert "tags" in e
        assert "transcript" not in e


def test_the_same_meaning_spelled_otherwise_is_the_same_shape(client: httpx.Client) -> None:
    cursor = first_cursor(client, {"filter[engagement_type][in]": "CALL,MEETING"})
    same = {"filter[engagement_type][eq]": "MEETING", "filter[engagement_type][in]": "CALL"}
    assert client.get("/v2/engagements", params={**same, "cursor": cursor}).status_code == 200


# ----------------------------------------------------------------------------- expansions
def test_without_expand_there_are_no_expansions(client: httpx.Client) -> None:
    for e in client.get("/v2/engagements", params={"limit": "100"}).json()["data"]:
        assert not set(EXPAND_VALUES) & set(e)
        assert not [k for k in e if k.startswith("_")]


def test_every_expansion_has_its_shape(client: httpx.Client, sim: Simulator) -> None:
    r = client.get("/v2/engagements", params={"limit": "100", "expand": ",".join(EXPAND_VALUES)})
    data = r.json()["data"]
    assert data
    for e in data:
        assert set(EXPAND_VALUES) <= set(e)
        for c in e["companies"]:
            assert c["object"] == "engagement_company"
            assert (sim.dataset.get("companies", c["id"]) or {}).get("name") == c["name"]
        for c in e["contacts"]:
            assert c["object"] == "engagement_contact"
            assert c["id"].startswith("cnt_")
        assert e["owner"] == sim.dataset.get("users", e["owner_user_id"])
        for t in e["tags"]:
            assert t == sim.dataset.get("tags", t["id"])
        for a in e["action_items"]:
            assert a["object"] == "action_item"
            assert a["assignee_user_id"] == e["owner_user_id"]
            assert parse_ts(a["due_at"]) > parse_ts(e["start_at"])
        transcribed = (
            e["processing_status"] == "COMPLETED"
            and e["engagement_type"] in ("MEETING", "CALL", "CALENDAR_EVENT")
            and e["duration_seconds"] > 0
        )
        assert (e["transcript"] is not None) == transcribed
        assert (e["media_url"] is not None) == transcribed
        assert bool(e["signals"]) == transcribed
        if transcribed:
            check_transcript(e)


def check_transcript(e: dict[str, Any]) -> None:
    """Lines `[start --> end] speaker: text`, in time order, inside the call; signals quote
    lines of it."""
    ends: list[float] = []
    spans = set()
    for line in e["transcript"].split("\n"):
        m = LINE_RE.match(line)
        assert m, line
        h, mi, s, ms, h2, mi2, s2, ms2 = (int(g) for g in m.groups()[:8])
        start = h * 3600 + mi * 60 + s + ms / 1000
        end = h2 * 3600 + mi2 * 60 + s2 + ms2 / 1000
        assert start < end <= e["duration_seconds"]
        assert not ends or start >= ends[-1]
        ends.append(end)
        spans.add((round(start, 2), round(end, 2), m.group(9)))
    for signal in e["signals"]:
        assert signal["object"] == "signal"
        key = (signal["start_seconds"], signal["end_seconds"], signal["speaker"])
        assert key in spans
        assert 0 < signal["confidence"] < 1


def test_a_one_hour_call_has_a_realistic_transcript() -> None:
    segments = transcript_segments(1, "ngmt_X", 3600, ("Ada Lovelace", "Alan Turing", "Grace"))
    words = sum(len(s.text.split()) for s in segments)
    # about 150 words a minute of conversation, with pauses between turns
    assert 6_000 <= words <= 11_000
    assert 200 <= len(segments) <= 600
    assert 30_000 <= len(transcript_text(segments)) <= 120_000
    assert segments[0].start_s < 5
    assert 3_500 <= segments[-1].end_s <= 3600
    assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(segments))
    assert all(a.speaker != b.speaker for a, b in itertools.pairwise(segments))
    assert {s.speaker for s in segments} == {"Ada Lovelace", "Alan Turing", "Grace"}


def test_expansions_are_stable_and_match_get_by_id(client: httpx.Client) -> None:
    params = {"limit": "100", "expand": "transcript,signals,contacts,companies,action_items"}
    first = client.get("/v2/engagements", params=params).json()["data"]
    again = client.get("/v2/engagements", params=params).json()["data"]
    assert first == again
    some = next(e for e in first if e["transcript"])
    one = client.get(f"/v2/engagements/{some['id']}", params={"expand": params["expand"]})
    assert one.status_code == 200
    assert one.json() == some
    assert "transcript" not in client.get(f"/v2/engagements/{some['id']}").json()
    item = error(client.get(f"/v2/engagements/{some['id']}", params={"expand": "x"}), 400)
    assert item["code"] == "invalid_expand"


def test_a_deleted_company_leaves_the_expansion_and_the_filter() -> None:
    with (
        Simulator(seed=9, records_per_resource=40, now=NOW) as s,
        httpx.Client(base_url=s.base_url, headers={"Authorization": s.api_key}) as c,
    ):
        data = c.get("/v2/engagements", params={"limit": "100", "expand": "companies"})
        linked = next(e for e in data.json()["data"] if e["companies"])
        company = linked["companies"][0]["id"]
        query = {"filter[company_ids][eq]": company, "limit": "100"}
        before = {e["id"] for e in c.get("/v2/engagements", params=query).json()["data"]}
        assert linked["id"] in before
        s.dataset.soft_delete("companies", [company])
        after = c.get("/v2/engagements", params={**query, "expand": "companies"}).json()
        assert after["data"] == []
        again = c.get(f"/v2/engagements/{linked['id']}", params={"expand": "companies"})
        assert company not in {x["id"] for x in again.json()["companies"]}


# ----------------------------------------------------------------------------- query shape
shapes = st.builds(
    EngagementQuery,
    st.frozensets(st.sampled_from(ENGAGEMENT_TYPES)),
    st.frozensets(st.sampled_from(PROCESSING_STATUSES)),
    st.frozensets(st.from_regex(r"cmp_[A-Za-z0-9]{1,8}", fullmatch=True), max_size=3),
    st.frozensets(st.from_regex(r"cnt_[A-Za-z0-9]{1,8}", fullmatch=True), max_size=3),
    st.frozensets(
        st.tuples(st.sampled_from(["company", "contact", "deal"]), st.text(min_size=1)),
        max_size=3,
    ),
    st.dictionaries(st.sampled_from(["gt", "gte", "lt", "lte"]), st.integers(0, 2**53)).map(
        lambda d: tuple(sorted(d.items()))
    ),
    st.lists(st.sampled_from(EXPAND_VALUES), unique=True).map(
        lambda xs: tuple(v for v in EXPAND_VALUES if v in xs)
    ),
)


@given(shape=shapes)
def test_a_query_shape_survives_the_cursor_round_trip(shape: EngagementQuery) -> None:
    # what a cursor carries must come back as the same shape, or pages would change query
    assert EngagementQuery.from_json(json.loads(json.dumps(shape.to_json()))) == shape


@given(shape=shapes, other=shapes)
def test_different_shapes_have_different_cursor_fingerprints(
    shape: EngagementQuery, other: EngagementQuery
) -> None:
    a = QueryShape("engagements", "asc", (), shape)
    b = QueryShape("engagements", "asc", (), other)
    assert (a.fingerprint() == b.fingerprint()) == (shape == other)

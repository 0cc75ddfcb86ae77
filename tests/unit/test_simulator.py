"""The AskElephant API v2 simulator, exercised through real HTTP (httpx)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from askelephant_simulator import (
    DEFAULT_API_KEY,
    FIELD_ORDER,
    ID_PREFIX,
    RESOURCES,
    Dataset,
    SimClock,
    Simulator,
    format_ts,
    parse_ts,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
ULID_RE = r"[0-9A-HJKMNP-TV-Z]{26}"


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def ro_sim() -> Iterator[Simulator]:
    """A read-only simulator shared by the tests that do not change anything."""
    with Simulator(seed=7, records_per_resource=230, now=NOW) as sim:
        yield sim


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=11, records_per_resource=120, now=NOW) as s:
        yield s


def client_for(sim: Simulator, auth: str | None = "default") -> httpx.Client:
    headers = {} if auth is None else {"Authorization": sim.api_key if auth == "default" else auth}
    return httpx.Client(base_url=sim.base_url, headers=headers, timeout=10)


def walk(
    client: httpx.Client, resource: str, params: dict[str, Any], *, resend: bool = True
) -> tuple[list[dict[str, Any]], int]:
    """Follow next_cursor until has_more is false; returns (records, pages)."""
    out: list[dict[str, Any]] = []
    pages = 0
    query = dict(params)
    while True:
        r = client.get(f"/v2/{resource}", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        out.extend(body["data"])
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return out, pages
        assert isinstance(body["next_cursor"], str)
        query = dict(params) if resend else {"limit": params.get("limit", 25)}
        query["cursor"] = body["next_cursor"]


def keys(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["updated_at"], r["id"]) for r in records]


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail", "request_id"}
    assert re.fullmatch(r"rid_" + ULID_RE, body["request_id"])
    assert body["type"].startswith("https://app.askelephant.ai/errors/")
    return body


# ----------------------------------------------------------------------------- envelope
def test_list_envelope_and_headers(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        r = c.get("/v2/contacts")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-api-version"] == "2026-03-01"
    assert parsedate_to_datetime(r.headers["date"]) == NOW  # Date follows the simulator clock
    body = r.json()
    assert list(body) == ["object", "data", "has_more", "next_cursor"]
    assert body["object"] == "list"
    assert len(body["data"]) == 25  # default limit
    assert body["has_more"] is True
    assert isinstance(body["next_cursor"], str)
    # default order: updated_at desc
    ks = keys(body["data"])
    assert ks == sorted(ks, reverse=True)


def test_base_url_and_api_key(ro_sim: Simulator) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api", ro_sim.base_url)
    assert ro_sim.api_key == DEFAULT_API_KEY == "sk-apik_simulator.localdevsecret"


@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize(
    ("order", "limit"), [("asc", 100), ("desc", 100), ("asc", 7), ("desc", 46)]
)
def test_traversal_returns_every_record_once(
    ro_sim: Simulator, resource: str, order: str, limit: int
) -> None:
    with client_for(ro_sim) as c:
        records, pages = walk(c, resource, {"order_by": f"updated_at:{order}", "limit": limit})
    expected = ro_sim.dataset.records(resource)
    if order == "desc":
        expected.reverse()
    assert records == expected
    assert len({r["id"] for r in records}) == 230
    assert pages == -(-230 // limit)


def test_next_page_may_drop_filters_and_order(ro_sim: Simulator) -> None:
    """docs/askelephant-api.md §2.1: the /pagination example drops filter and order_by on the next
    page."""
    checkpoint = format_ts(ro_sim.dataset.updated_at_us("tags", ro_sim.dataset.ids("tags")[50]))
    params = {"order_by": "updated_at:asc", "filter[updated_at][gte]": checkpoint, "limit": 10}
    with client_for(ro_sim) as c:
        full, _ = walk(c, "tags", params)
        dropped, _ = walk(c, "tags", params, resend=False)
    assert dropped == full
    assert len(full) == 180


def test_empty_result_and_date_only_filter(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        body = c.get("/v2/users", params={"limit": 100, "filter[updated_at][lt]": "2000-01-01Z"})
    assert body.status_code == 400  # not a date-time: the date alone is rejected
    with client_for(ro_sim) as c:
        body = c.get(
            "/v2/users", params={"limit": 100, "filter[updated_at][lt]": "2000-01-01T00:00:00Z"}
        ).json()
    assert body == {"object": "list", "data": [], "has_more": False, "next_cursor": None}


# ----------------------------------------------------------------------------- filters
def test_filter_semantics_with_ties() -> None:
    with Simulator(seed=3, records_per_resource=40, now=NOW, timestamp_precision="us") as sim:
        tie_ids = sim.dataset.create("contacts", 4, same_timestamp=True)
        sim.dataset.create("contacts", 2)
        tie = sim.dataset.updated_at_us("contacts", tie_ids[0])
        t = format_ts(tie, "us")
        all_keys = [
            (sim.dataset.updated_at_us("contacts", i), i) for i in sim.dataset.ids("contacts")
        ]
        with client_for(sim) as c:

            def ids_for(op: str) -> set[str]:
                recs, _ = walk(
                    c,
                    "contacts",
                    {"order_by": "updated_at:asc", "limit": 3, f"filter[updated_at][{op}]": t},
                )
                return {r["id"] for r in recs}

            assert ids_for("gte") == {i for u, i in all_keys if u >= tie}
            assert ids_for("gt") == {i for u, i in all_keys if u > tie}
            assert ids_for("lt") == {i for u, i in all_keys if u < tie}
            assert ids_for("lte") == {i for u, i in all_keys if u <= tie}
            assert set(tie_ids) <= ids_for("gte")
            assert not set(tie_ids) & ids_for("gt")
            assert len(ids_for("gt")) == 2
            # combined range: exactly the tie group
            recs, _ = walk(
                c,
                "contacts",
                {"filter[updated_at][gte]": t, "filter[updated_at][lte]": t, "limit": 1},
            )
            assert sorted(r["id"] for r in recs) == sorted(tie_ids)
            # ties are broken on id (desc order -> ids descending)
            assert [r["id"] for r in recs] == sorted(tie_ids, reverse=True)


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-01T00:00:00Z",
        "2026-03-01T00:00:00.000Z",
        "2026-03-01T00:00:00.000000Z",
        "2026-03-01T00:00:00.000000000Z",
        "2026-03-01T00:00:00+00:00",
        "2026-03-01T02:00:00+02:00",
        "2026-02-28T19:00:00-05:00",
        "2026-03-01t00:00:00z",
    ],
)
def test_filter_accepts_iso8601_forms(ro_sim: Simulator, value: str) -> None:
    with client_for(ro_sim) as c:
        ref = c.get(
            "/v2/engagements",
            params={"filter[updated_at][gte]": "2026-03-01T00:00:00Z", "limit": 100},
        ).json()
        r = c.get("/v2/engagements", params={"filter[updated_at][gte]": value, "limit": 100})
    assert r.status_code == 200
    assert r.json() == ref


@pytest.mark.parametrize(
    "value",
    ["yesterday", "2026-03-01", "2026-03-01T00:00:00", "2026-13-01T00:00:00Z", "1700000000", ""],
)
def test_filter_rejects_invalid_datetimes(ro_sim: Simulator, value: str) -> None:
    with client_for(ro_sim) as c:
        r = c.get("/v2/companies", params={"filter[updated_at][gt]": value})
    body = problem(r, 400)
    assert body["errors"][0] == {
        "field": "filter[updated_at][gt]",
        "code": "invalid_datetime",
        "message": body["errors"][0]["message"],
    }


def test_unencoded_plus_in_offset_is_rejected_with_hint(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        r = c.get("/v2/companies?filter[updated_at][gt]=2026-03-01T00:00:00+00:00")
    body = problem(r, 400)
    assert "%2B" in body["errors"][0]["message"]


def test_second_precision_rendering_keeps_gte_inclusive() -> None:
    """With `s` rendering the value is truncated, so gte on it still includes the record."""
    with Simulator(seed=5, records_per_resource=30, now=NOW, timestamp_precision="s") as sim:
        sim.clock.set(datetime(2026, 3, 10, 12, 0, 5, 678901, tzinfo=UTC))
        (rid,) = sim.dataset.create("contacts", 1)
        with client_for(sim) as c:
            rendered = c.get(f"/v2/contacts/{rid}").json()["updated_at"]
            assert rendered == "2026-03-10T12:00:05Z"
            gte = c.get("/v2/contacts", params={"filter[updated_at][gte]": rendered}).json()
            gt = c.get("/v2/contacts", params={"filter[updated_at][gt]": rendered}).json()
            lte = c.get("/v2/contacts", params={"filter[updated_at][lte]": rendered}).json()
        assert [r["id"] for r in gte["data"]] == [rid]
        assert [r["id"] for r in gt["data"]] == [rid]  # stored .678901 > rendered .000000
        assert rid not in {r["id"] for r in lte["data"]}


@pytest.mark.parametrize(
    ("precision", "pattern"),
    [
        ("s", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"),
        ("ms", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"),
        ("us", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"),
    ],
)
def test_timestamp_precision(precision: str, pattern: str) -> None:
    with Simulator(seed=1, records_per_resource=20, now=NOW) as sim:
        sim.dataset.set_precision(precision)
        with client_for(sim) as c:
            for resource in RESOURCES:
                for rec in c.get(f"/v2/{resource}", params={"limit": 100}).json()["data"]:
                    for name in ("created_at", "updated_at", "start_at", "last_activity_at"):
                        if name in rec:
                            assert re.fullmatch(pattern, rec[name]), rec[name]


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("limit", ["0", "101", "-1", "1000"])
def test_limit_out_of_range_is_422_like_the_docs(ro_sim: Simulator, limit: str) -> None:
    with client_for(ro_sim) as c:
        r = c.get("/v2/contacts", params={"limit": limit})
    body = problem(r, 422)
    assert body == {
        "type": "https://app.askelephant.ai/errors/validation_failed",
        "title": "Validation Failed",
        "status": 422,
        "detail": "The request contains invalid fields.",
        "request_id": body["request_id"],
        "errors": [
            {
                "field": "limit",
                "code": "invalid_range",
                "message": "limit must be between 1 and 100.",
            }
        ],
    }
    assert r.headers["x-request-id"] == body["request_id"]


def test_limit_not_an_integer_is_422(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        body = problem(c.get("/v2/contacts", params={"limit": "ten"}), 422)
    assert body["errors"][0]["code"] == "invalid_type"


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_accepted(ro_sim: Simulator, limit: int) -> None:
    with client_for(ro_sim) as c:
        r = c.get("/v2/contacts", params={"limit": limit})
    assert r.status_code == 200
    assert len(r.json()["data"]) == limit


@pytest.mark.parametrize("order_by", ["updated_at", "created_at:asc", "updated_at:ASC", ""])
def test_invalid_order_by_is_400(ro_sim: Simulator, order_by: str) -> None:
    with client_for(ro_sim) as c:
        body = problem(c.get("/v2/tags", params={"order_by": order_by}), 400)
    assert body["errors"][0]["field"] == "order_by"
    assert body["errors"][0]["code"] == "invalid_enum"


def test_unsupported_and_duplicate_parameters_are_400(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        body = problem(c.get("/v2/contacts", params={"search": "ada"}), 400)
        assert body["errors"][0]["code"] == "unsupported_by_simulator"
        body = problem(c.get("/v2/contacts?limit=5&limit=6"), 400)
        assert body["errors"][0]["code"] == "duplicate_parameter"
        body = problem(
            c.get("/v2/contacts", params={"filter[updated_at][eq]": NOW.isoformat()}), 400
        )
        assert body["errors"][0]["code"] == "invalid_operator"


def test_unknown_route_and_method(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        problem(c.get("/v2/deals"), 404)
        r = c.post("/v2/contacts", json={})
    problem(r, 405)
    assert r.headers["allow"] == "GET"


# ----------------------------------------------------------------------------- cursors
def first_cursor(c: httpx.Client, resource: str, params: dict[str, Any]) -> str:
    body = c.get(f"/v2/{resource}", params=params).json()
    assert body["has_more"]
    cursor: str = body["next_cursor"]
    return cursor


def test_cursor_is_opaque_base64url_json(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        cursor = first_cursor(c, "contacts", {"limit": 5})
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert set(decoded["p"]) >= {"r", "o", "f", "q", "k"}


@pytest.mark.parametrize(
    "cursor", ["garbage", "eyJpZCI6ImNudF8wMUhRWTNKTVMyUUFYSkdYNlg3Q0g3Q002WCJ9", "%%%"]
)
def test_invalid_cursor_is_400(ro_sim: Simulator, cursor: str) -> None:
    with client_for(ro_sim) as c:
        body = problem(c.get("/v2/contacts", params={"cursor": cursor}), 400)
    assert body["type"] == "https://app.askelephant.ai/errors/invalid_cursor"
    assert body["errors"][0] == {
        "field": "cursor",
        "code": "invalid_cursor",
        "message": body["errors"][0]["message"],
    }


def test_tampered_cursor_is_400(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        cursor = first_cursor(c, "contacts", {"limit": 5})
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        raw["p"]["k"][1] = "cnt_00000000000000000000000000"
        forged = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")
        body = problem(c.get("/v2/contacts", params={"cursor": forged}), 400)
    assert body["errors"][0]["code"] == "invalid_cursor"


def test_cursor_from_another_endpoint_is_rejected(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        cursor = first_cursor(c, "contacts", {"limit": 5})
        body = problem(c.get("/v2/companies", params={"cursor": cursor, "limit": 5}), 400)
    assert body["errors"][0]["code"] == "cursor_mismatch"


@pytest.mark.parametrize(
    "changed",
    [
        {"order_by": "updated_at:desc", "filter[updated_at][gte]": "2026-01-01T00:00:00Z"},
        {"order_by": "updated_at:asc", "filter[updated_at][gte]": "2026-01-02T00:00:00Z"},
        {"order_by": "updated_at:asc", "filter[updated_at][gt]": "2026-01-01T00:00:00Z"},
        {"order_by": "updated_at:asc"},
        {"filter[updated_at][gte]": "2026-01-01T00:00:00Z"},  # default order is desc
    ],
)
def test_cursor_with_a_different_query_shape_is_rejected(
    ro_sim: Simulator, changed: dict[str, str]
) -> None:
    params = {"order_by": "updated_at:asc", "filter[updated_at][gte]": "2026-01-01T00:00:00Z"}
    with client_for(ro_sim) as c:
        cursor = first_cursor(c, "contacts", {**params, "limit": 5})
        body = problem(c.get("/v2/contacts", params={**changed, "cursor": cursor}), 400)
        assert body["errors"][0]["code"] == "cursor_mismatch"
        # the same shape written differently (another offset, limit changed) is accepted
        same = {
            "order_by": "updated_at:asc",
            "filter[updated_at][gte]": "2026-01-01T01:00:00+01:00",
            "limit": "50",
            "cursor": cursor,
        }
        assert c.get("/v2/contacts", params=same).status_code == 200


# ----------------------------------------------------------------------------- auth
def test_auth_raw_api_key_accepted(ro_sim: Simulator) -> None:
    with client_for(ro_sim) as c:
        assert c.get("/v2/users", params={"limit": 1}).status_code == 200


def test_auth_bearer_api_key_rejected(ro_sim: Simulator) -> None:
    with client_for(ro_sim, auth=f"Bearer {ro_sim.api_key}") as c:
        r = c.get("/v2/users")
    body = problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "without 'Bearer'" in body["detail"]


def test_auth_missing_rejected(ro_sim: Simulator) -> None:
    with client_for(ro_sim, auth=None) as c:
        r = c.get("/v2/users")
    problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_auth_wrong_key_rejected(ro_sim: Simulator) -> None:
    with client_for(ro_sim, auth="sk-apik_simulator.wrong") as c:
        r = c.get("/v2/users")
    problem(r, 401)
    assert "www-authenticate" not in r.headers


def test_auth_bearer_access_token_when_configured() -> None:
    with Simulator(seed=1, records_per_resource=5, now=NOW, access_token="oat_123") as sim:
        with client_for(sim, auth="Bearer oat_123") as c:
            assert c.get("/v2/tags").status_code == 200
        with client_for(sim, auth="Bearer oat_999") as c:
            r = c.get("/v2/tags")
            problem(r, 401)
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
        with client_for(sim) as c:  # the raw key keeps working
            assert c.get("/v2/tags").status_code == 200


def test_custom_api_key() -> None:
    with Simulator(seed=1, records_per_resource=5, api_key="sk-apik_abc.def") as sim:
        with client_for(sim) as c:
            assert c.get("/v2/tags").status_code == 200
        with client_for(sim, auth=DEFAULT_API_KEY) as c:
            assert c.get("/v2/tags").status_code == 401


# ----------------------------------------------------------------------------- faults
def test_rate_limit_with_retry_after_seconds(sim: Simulator) -> None:
    sim.faults.rate_limit(count=2, retry_after=3)
    with client_for(sim) as c:
        for _ in range(2):
            r = c.get("/v2/contacts")
            body = problem(r, 429)
            assert r.headers["retry-after"] == "3"
            assert body["type"] == "https://app.askelephant.ai/errors/rate_limited"
            assert r.headers["x-api-version"] == "2026-03-01"
        assert c.get("/v2/contacts").status_code == 200
    assert sim.faults.rules() == []


def test_rate_limit_with_http_date(sim: Simulator) -> None:
    sim.faults.rate_limit(retry_after=30, http_date=True)
    with client_for(sim) as c:
        r = c.get("/v2/contacts")
    problem(r, 429)
    when = parsedate_to_datetime(r.headers["retry-after"])
    assert (when - parsedate_to_datetime(r.headers["date"])).total_seconds() == 30


def test_rate_limit_without_retry_after(sim: Simulator) -> None:
    sim.faults.rate_limit(retry_after=None)
    with client_for(sim) as c:
        r = c.get("/v2/contacts")
    problem(r, 429)
    assert "retry-after" not in r.headers


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_problem_json(sim: Simulator, status: int) -> None:
    sim.faults.server_error(status, count=1)
    with client_for(sim) as c:
        problem(c.get("/v2/companies"), status)
        assert c.get("/v2/companies").status_code == 200


def test_faults_per_resource_and_probability(sim: Simulator) -> None:
    sim.faults.server_error(503, count=None, resource="tags")
    never = sim.faults.add("status", status=500, count=None, probability=0.0)
    with client_for(sim) as c:
        assert c.get("/v2/tags").status_code == 503
        assert c.get("/v2/tags").status_code == 503
        assert c.get("/v2/users").status_code == 200
        sim.faults.clear()
        sim.faults.add("status", status=502, count=3, probability=1.0, resource="users")
        assert [c.get("/v2/users").status_code for _ in range(4)] == [502, 502, 502, 200]
    assert never > 0


def test_probabilistic_faults_are_seeded() -> None:
    def statuses() -> list[int]:
        with Simulator(seed=9, records_per_resource=5, now=NOW) as sim:
            sim.faults.add("status", status=500, count=None, probability=0.5)
            with client_for(sim) as c:
                return [c.get("/v2/tags").status_code for _ in range(30)]

    first = statuses()
    assert first == statuses()
    assert {200, 500} == set(first)


def test_slow_responses(sim: Simulator) -> None:
    sim.faults.slow(300, count=1)
    with client_for(sim) as c:
        t0 = time.monotonic()
        assert c.get("/v2/tags").status_code == 200
        slow = time.monotonic() - t0
        t0 = time.monotonic()
        assert c.get("/v2/tags").status_code == 200
        fast = time.monotonic() - t0
    assert slow >= 0.3
    assert fast < 0.3


def test_connection_drop_and_truncated_body(sim: Simulator) -> None:
    sim.faults.drop_connection(count=1)
    with client_for(sim) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/v2/contacts")
        assert c.get("/v2/contacts").status_code == 200
        sim.faults.truncate_body(count=1)
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/v2/contacts")
        assert c.get("/v2/contacts").status_code == 200
    assert sim.stats()["by_resource"]["contacts"]["by_status"] == {"200": 3, "dropped": 1}


def test_fault_validation() -> None:
    with Simulator(seed=1, records_per_resource=1) as sim:
        for bad in (
            {"kind": "status", "status": 200},
            {"kind": "bogus"},
            {"kind": "status", "count": 0},
            {"kind": "status", "probability": 2},
            {"kind": "status", "resource": "deals"},
            {"kind": "delay"},
        ):
            with pytest.raises((ValueError, TypeError)):
                sim.faults.add_from_dict(bad)


# ----------------------------------------------------------------------------- mutations
def test_mutation_mid_traversal_moves_record_later(sim: Simulator) -> None:
    """A record updated while an asc traversal runs is seen later, at its new updated_at."""
    ids_before = sim.dataset.ids("contacts")  # asc order
    moved = ids_before[35]  # page 4 with limit 10: not yet read after 2 pages
    old = sim.dataset.get("contacts", moved)
    assert old is not None
    sched = sim.schedule_mutation(after_requests=2, resource="contacts", ids=[moved])
    with client_for(sim) as c:
        records, _ = walk(c, "contacts", {"order_by": "updated_at:asc", "limit": 10})
    assert sched.done.is_set()
    assert sched.result_ids == [moved]
    seen = [r for r in records if r["id"] == moved]
    assert len(seen) == 1
    assert seen[0]["updated_at"] > old["updated_at"]
    assert records[-1]["id"] == moved  # moved to the end of the traversal
    assert len(records) == 120
    assert {r["id"] for r in records} == set(ids_before)


def test_mutation_of_already_read_record_is_seen_twice(sim: Simulator) -> None:
    first = sim.dataset.ids("contacts")[0]
    sim.schedule_mutation(after_requests=2, resource="contacts", ids=[first])
    with client_for(sim) as c:
        records, _ = walk(c, "contacts", {"order_by": "updated_at:asc", "limit": 10})
    assert [r["id"] for r in records].count(first) == 2
    assert len(records) == 121


def test_mutation_mid_desc_traversal_can_skip_record(sim: Simulator) -> None:
    """The hazard of desc order: a record moving to the front is never seen."""
    ids_desc = sim.dataset.ids("contacts")[::-1]
    moved = ids_desc[50]
    sim.schedule_mutation(after_requests=1, resource="contacts", ids=[moved])
    with client_for(sim) as c:
        records, _ = walk(c, "contacts", {"order_by": "updated_at:desc", "limit": 10})
    assert moved not in {r["id"] for r in records}
    assert len(records) == 119


def test_failing_scheduled_mutation_does_not_break_serving(sim: Simulator) -> None:
    victim = sim.dataset.ids("users")[0]
    sched = sim.schedule_mutation(after_requests=1, resource="users", ids=[victim])
    sim.dataset.soft_delete("users", [victim])
    with client_for(sim) as c:
        assert c.get("/v2/users").status_code == 200
        assert c.get("/v2/users").status_code == 200
    assert sched.done.is_set()
    assert sched.error is not None


def test_scheduled_create_and_delete(sim: Simulator) -> None:
    created = sim.schedule_mutation(after_requests=1, resource="tags", operation="create", count=2)
    first = sim.dataset.ids("tags")[0]
    deleted = sim.schedule_mutation(
        after_requests=2, resource="tags", operation="delete", ids=[first]
    )
    with client_for(sim) as c:
        records, _ = walk(c, "tags", {"order_by": "updated_at:asc", "limit": 30})
    assert len(created.result_ids) == 2
    assert deleted.result_ids == [first]
    assert sim.dataset.count("tags") == 121
    got = [r["id"] for r in records]
    assert got[0] == first  # read before it was deleted
    assert got[-2:] == created.result_ids
    assert len(got) == 122


def test_request_hook_can_mutate(sim: Simulator) -> None:
    moved: list[str] = []

    def hook(info: Any) -> None:
        if info.resource == "tags" and info.seq == 1:
            moved.extend(sim.dataset.mutate("tags", 3))

    remove = sim.add_request_hook(hook)
    with client_for(sim) as c:
        records, _ = walk(c, "tags", {"order_by": "updated_at:asc", "limit": 100})
    remove()
    assert len(moved) == 3
    assert {r["id"] for r in records[-3:]} == set(moved)


def test_mutate_changes_fields_and_timestamps_strictly_increase(sim: Simulator) -> None:
    before = {r["id"]: r for r in sim.dataset.records("engagements")}
    ids = sim.dataset.mutate("engagements", 10)
    assert len(set(ids)) == 10
    stamps = [sim.dataset.updated_at_us("engagements", i) for i in ids]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 10  # strictly increasing even with a frozen clock
    assert stamps[0] >= int(NOW.timestamp() * 1_000_000)
    for i in ids:
        after = sim.dataset.get("engagements", i)
        assert after is not None
        assert after["created_at"] == before[i]["created_at"]
        changed = {k for k in after.keys() | before[i].keys() if after.get(k) != before[i].get(k)}
        assert "updated_at" in changed
        assert len(changed) >= 2  # at least one field besides updated_at


def test_same_timestamp_mutation_and_pagination_through_the_tie(sim: Simulator) -> None:
    ids = sim.dataset.mutate("companies", 9, same_timestamp=True)
    stamps = {sim.dataset.updated_at_us("companies", i) for i in ids}
    assert len(stamps) == 1
    checkpoint = format_ts(stamps.pop(), "ms")
    with client_for(sim) as c:
        records, pages = walk(
            c,
            "companies",
            {"order_by": "updated_at:asc", "limit": 2, "filter[updated_at][gte]": checkpoint},
        )
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert [r["id"] for r in records] == sorted(ids)  # tie-break on id
    assert pages == 5


def test_create_and_soft_delete(sim: Simulator) -> None:
    created = sim.dataset.create("tags", 2)
    victims = sim.dataset.ids("tags")[:3]
    assert sim.dataset.soft_delete("tags", [*victims, "tag_unknown"]) == victims
    with client_for(sim) as c:
        records, _ = walk(c, "tags", {"order_by": "updated_at:asc", "limit": 50})
        got = {r["id"] for r in records}
        assert set(created) <= got
        assert not set(victims) & got
        assert len(records) == 120 + 2 - 3
        assert [r["id"] for r in records[-2:]] == created
        problem(c.get(f"/v2/tags/{victims[0]}"), 404)
    with pytest.raises(KeyError):
        sim.dataset.update("tags", [victims[0]])


def test_get_by_id_with_etag(ro_sim: Simulator) -> None:
    rid = ro_sim.dataset.ids("engagements")[3]
    with client_for(ro_sim) as c:
        r = c.get(f"/v2/engagements/{rid}")
        assert r.status_code == 200
        assert r.json() == ro_sim.dataset.get("engagements", rid)
        assert r.headers["etag"].startswith('"')
        assert r.headers["x-api-version"] == "2026-03-01"
        problem(c.get("/v2/engagements/ngmt_nope"), 404)


# ----------------------------------------------------------------------------- records
OPTIONAL: dict[str, set[str]] = {
    "contacts": {
        "description",
        "company",
        "emails",
        "phone_numbers",
        "crm_association",
        "time_zone",
    },
    "companies": {
        "description",
        "industry",
        "website",
        "number_of_employees",
        "logo_url",
        "domains",
        "crm_association",
    },
    "users": set(),
    "tags": set(),
    "engagements": {
        "description",
        "meeting_url",
        "external_url",
        "crm_association",
        "host_user_id",
    },
}
NULLABLE: dict[str, set[str]] = {
    "contacts": {"first_name", "last_name"},
    "companies": {"name"},
    "users": {"first_name", "last_name"},
    "tags": {"hex_color", "description"},
    "engagements": set(),
}


@pytest.mark.parametrize("resource", RESOURCES)
def test_record_shapes(ro_sim: Simulator, resource: str) -> None:
    with client_for(ro_sim) as c:
        records, _ = walk(c, resource, {"limit": 100})
    base = {"object", "id", "created_at", "updated_at"}
    documented = base | set(FIELD_ORDER[resource])
    required = documented - OPTIONAL[resource]
    seen_optional: set[str] = set()
    missing_optional: set[str] = set()
    seen_null: set[str] = set()
    for rec in records:
        assert set(rec) <= documented, set(rec) - documented
        assert required <= set(rec), required - set(rec)
        assert re.fullmatch(ID_PREFIX[resource] + ULID_RE, rec["id"])
        assert rec["created_at"] <= rec["updated_at"]
        for name, value in rec.items():
            if value is None:
                seen_null.add(name)
            if name in OPTIONAL[resource]:
                assert value is not None, f"optional {name} must be omitted, not null"
                assert value != [], f"empty {name} must be omitted"
        seen_optional |= set(rec) & OPTIONAL[resource]
        missing_optional |= OPTIONAL[resource] - set(rec)
    assert seen_null <= NULLABLE[resource]
    assert seen_null == NULLABLE[resource]  # every nullable field is null somewhere
    assert seen_optional == OPTIONAL[resource]  # every optional field shows up somewhere
    assert missing_optional == OPTIONAL[resource]  # ... and is omitted somewhere


def test_nested_object_shapes(ro_sim: Simulator) -> None:
    crm_types: set[str] = set()
    for rec in ro_sim.dataset.records("contacts"):
        if "company" in rec:
            assert set(rec["company"]) == {"id", "object"}
            assert rec["company"]["object"] == "company"
            assert ro_sim.dataset.get("companies", rec["company"]["id"]) is not None
        for item in rec.get("emails", []):
            assert set(item) == {"email", "is_primary"}
            assert re.fullmatch(r"[a-z0-9.]+@[a-z0-9.-]+\.[a-z]+", item["email"])
        for item in rec.get("phone_numbers", []):
            assert set(item) == {"phone_number", "is_primary"}
        for group in ("emails", "phone_numbers"):
            if group in rec:
                assert [i["is_primary"] for i in rec[group]].count(True) == 1
        if "crm_association" in rec:
            assert set(rec["crm_association"]) == {"object_type", "crm_object_id", "source"}
            crm_types.add(rec["crm_association"]["object_type"])
    assert crm_types == {"contact"}
    for rec in ro_sim.dataset.records("companies"):
        for item in rec.get("domains", []):
            assert set(item) == {"domain", "is_primary"}
        if "number_of_employees" in rec:
            assert isinstance(rec["number_of_employees"], int)
    users = set(ro_sim.dataset.ids("users"))
    types: set[str] = set()
    for rec in ro_sim.dataset.records("engagements"):
        assert rec["engagement_type"] in {
            "MEETING", "CALL", "EMAIL", "TASK", "NOTE", "CALENDAR_EVENT", "DOCUMENT"
        }  # fmt: skip
        assert rec["processing_status"] in {"PENDING", "PROCESSING", "COMPLETED", "FAILED"}
        assert rec["owner_user_id"] in users
        assert (
            parse_ts(rec["end_at"]) - parse_ts(rec["start_at"]) == rec["duration_seconds"] * 10**6
        )
        assert isinstance(rec["is_private"], bool)
        assert isinstance(rec["is_internal"], bool)
        if "crm_association" in rec:
            types.add(rec["crm_association"]["object_type"])
    assert types == {"company", "contact", "deal"}
    for rec in ro_sim.dataset.records("tags"):
        assert rec["hex_color"] is None or re.fullmatch(r"#[A-Fa-f0-9]{6}", rec["hex_color"])
        assert isinstance(rec["auto_tagging_enabled"], bool)
    for rec in ro_sim.dataset.records("users"):
        assert rec["emails"]
        assert rec["role"] in {"OWNER", "ADMIN", "MEMBER", "INACTIVE", "NOT_INVITED"}


def test_seeded_data_contains_timestamp_ties(ro_sim: Simulator) -> None:
    for resource in RESOURCES:
        stamps = [ro_sim.dataset.updated_at_us(resource, i) for i in ro_sim.dataset.ids(resource)]
        assert len(set(stamps)) < len(stamps), resource


def test_determinism_by_seed() -> None:
    def snapshot(seed: int) -> dict[str, list[dict[str, Any]]]:
        ds = Dataset(seed, 50, clock=SimClock(NOW))
        ds.mutate("contacts", 5, same_timestamp=True)
        ds.create("engagements", 3)
        return {r: ds.records(r) for r in RESOURCES}

    assert snapshot(1) == snapshot(1)
    assert snapshot(1) != snapshot(2)


def test_determinism_through_http() -> None:
    def pages(seed: int) -> list[Any]:
        with Simulator(seed=seed, records_per_resource=30, now=NOW) as sim, client_for(sim) as c:
            return [walk(c, r, {"limit": 7})[0] for r in RESOURCES]

    assert pages(4) == pages(4)


def test_unknown_field_injection() -> None:
    extra = {"x_new_field": {"nested": [1, 2]}, "id": "must-not-override"}
    with Simulator(seed=2, records_per_resource=10, now=NOW, extra_fields=extra) as sim:
        sim.dataset.set_extra_fields({"x_tag_only": True}, resource="tags")
        with client_for(sim) as c:
            contact = c.get("/v2/contacts").json()["data"][0]
            tag = c.get("/v2/tags").json()["data"][0]
        assert contact["x_new_field"] == {"nested": [1, 2]}
        assert contact["id"].startswith("cnt_")
        assert "x_tag_only" not in contact
        assert tag["x_tag_only"] is True
        assert tag["x_new_field"] == {"nested": [1, 2]}
        sim.dataset.set_extra_fields(None)
        assert "x_new_field" not in sim.dataset.records("contacts")[0]


# ----------------------------------------------------------------------------- control plane
def test_control_endpoints(sim: Simulator) -> None:
    with httpx.Client(base_url=sim.control_url, timeout=10) as ctl, client_for(sim) as c:
        assert ctl.get("/health").json() == {"status": "ok"}
        c.get("/v2/contacts")
        c.get("/v2/users", headers={"Authorization": "nope"})
        stats = ctl.get("/stats").json()
        assert stats["requests_total"] == 2
        assert stats["by_resource"]["contacts"] == {"requests": 1, "by_status": {"200": 1}}
        assert stats["by_resource"]["users"]["by_status"] == {"401": 1}
        assert stats["records"]["tags"] == {"active": 120, "deleted": 0}

        out = ctl.post(
            "/mutate", json={"resource": "tags", "count": 3, "same_timestamp": True}
        ).json()
        assert len(out["ids"]) == 3
        assert len(set(out["updated_at"])) == 1
        out = ctl.post("/create", json={"resource": "users", "count": 2}).json()
        assert len(out["ids"]) == 2
        out = ctl.post("/delete", json={"resource": "users", "ids": out["ids"][:1]}).json()
        assert len(out["ids"]) == 1
        records = ctl.get("/records/users").json()
        assert len(records["data"]) == 121
        assert records["deleted_ids"] == out["ids"]

        rule = ctl.post(
            "/faults", json={"kind": "status", "status": 429, "retry_after": 2, "count": 1}
        ).json()
        assert rule["rules"][0]["status"] == 429
        r = c.get("/v2/contacts")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "2"
        assert ctl.get("/faults").json()["rules"] == []
        rid = ctl.post("/faults", json={"kind": "delay", "delay_ms": 1, "count": None}).json()["id"]
        assert ctl.delete(f"/faults/{rid}").json()["removed"] is True
        assert ctl.post("/faults", json={"kind": "status", "status": 99}).status_code == 400

        sched = ctl.post(
            "/schedule", json={"resource": "contacts", "after_requests": 1, "count": 2}
        ).json()
        assert sched["done"] is False
        assert len(ctl.get("/schedule").json()["pending"]) == 1
        c.get("/v2/contacts")
        assert ctl.get("/schedule").json()["pending"] == []

        clock = ctl.post("/clock", json={"advance_seconds": 60}).json()
        assert clock == {"now": "2026-03-10T12:01:00.000000Z", "frozen": True}
        clock = ctl.post("/clock", json={"now": "2026-04-01T00:00:00Z"}).json()
        assert clock["now"] == "2026-04-01T00:00:00.000000Z"
        assert c.get("/v2/tags").headers["date"] == "Wed, 01 Apr 2026 00:00:00 GMT"

        ctl.post("/extra_fields", json={"fields": {"x_extra": 1}})
        assert c.get("/v2/tags").json()["data"][0]["x_extra"] == 1
        ctl.post("/config", json={"timestamp_precision": "s", "api_version": "2099-01-01"})
        r = c.get("/v2/tags")
        assert r.headers["x-api-version"] == "2099-01-01"
        assert re.fullmatch(r".*T\d\d:\d\d:\d\dZ", r.json()["data"][0]["updated_at"])

        log = ctl.get("/requests", params={"limit": 2}).json()["requests"]
        assert [e["resource"] for e in log] == ["tags", "tags"]

        ctl.post("/reset", json={"seed": 5, "records": 10})
        stats = ctl.get("/stats").json()
        assert stats["requests_total"] == 0
        assert stats["records"]["contacts"] == {"active": 10, "deleted": 0}
        assert ctl.get("/config").json()["seed"] == 5

        assert ctl.post("/mutate", json={"resource": "deals"}).status_code == 400
        assert ctl.post("/mutate", content=b"[1]").status_code == 400
        assert ctl.get("/nope").status_code == 404


def test_churn_changes_records_in_the_background() -> None:
    with Simulator(seed=1, records_per_resource=20, now=NOW) as sim:
        assert sim.app.churn.tick(60) == 0  # off by default
        sim.app.churn.set_rate(120)
        before = sum(sim.dataset.count(r, include_deleted=True) for r in RESOURCES)
        assert sim.app.churn.tick(30) == 60
        after = sum(sim.dataset.count(r, include_deleted=True) for r in RESOURCES)
        assert after > before  # some creates among the changes
        sim.app.churn.set_rate(0)
        with httpx.Client(base_url=sim.control_url, timeout=10) as ctl:
            assert ctl.post("/churn", json={"changes_per_minute": 6000}).json() == {
                "changes_per_minute": 6000.0
            }
            deadline = time.monotonic() + 10
            while sim.app.churn.changes == 60 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sim.app.churn.changes > 60
            assert ctl.get("/config").json()["churn_per_minute"] == 6000.0
            assert ctl.post("/churn", json={"changes_per_minute": -1}).status_code == 400


def test_control_endpoints_are_not_fault_injected(sim: Simulator) -> None:
    sim.faults.server_error(500, count=None)
    with httpx.Client(base_url=sim.control_url, timeout=10) as ctl:
        assert ctl.get("/stats").status_code == 200


def test_simulator_restart_is_clean() -> None:
    sim = Simulator(seed=1, records_per_resource=3)
    sim.start()
    with client_for(sim) as c:
        assert c.get("/v2/tags").status_code == 200
    sim.stop()
    sim.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = sim.port

"""Simulator building blocks without HTTP, plus the foreground runner (subprocess + signal)."""

from __future__ import annotations

import base64
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from askelephant_simulator import (
    RESOURCES,
    CursorCodec,
    Dataset,
    FaultInjector,
    ProblemError,
    SimClock,
    format_ts,
    parse_ts,
    run_simulator,
)
from askelephant_simulator.clock import from_us, to_us, truncate_us
from askelephant_simulator.dataset import crockford, ulid
from askelephant_simulator.listing import QueryShape, parse_list_query
from askelephant_simulator.resources import WEBHOOK_OBJECTS, svix_sign

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
T = to_us(datetime(2026, 3, 4, 18, 25, 0, 123456, tzinfo=UTC))


# ----------------------------------------------------------------------------- clock
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-04T18:25:00Z", T - 123456),
        ("2026-03-04T18:25:00.123Z", T - 456),
        ("2026-03-04T18:25:00.123456Z", T),
        ("2026-03-04T18:25:00.1234569Z", T),  # extra digits are truncated
        ("2026-03-04T18:25:00.123456+00:00", T),
        ("2026-03-04T20:25:00.123456+02:00", T),
        ("2026-03-04T13:25:00.123456-0500", T),
        ("2026-03-04T18:25:00,123456Z", T),
    ],
)
def test_parse_ts(text: str, expected: int) -> None:
    assert parse_ts(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2026-03-04", "2026-03-04T18:25:00", "2026-03-04 18:25:00Z", "2026-02-30T00:00:00Z", "x"],
)
def test_parse_ts_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_ts(text)


def test_format_ts_truncates() -> None:
    assert format_ts(T, "s") == "2026-03-04T18:25:00Z"
    assert format_ts(T, "ms") == "2026-03-04T18:25:00.123Z"
    assert format_ts(T, "us") == "2026-03-04T18:25:00.123456Z"
    assert format_ts(T + 999, "ms") == "2026-03-04T18:25:00.124Z"
    assert truncate_us(T, "ms") == parse_ts(format_ts(T, "ms"))
    assert from_us(T) == datetime(2026, 3, 4, 18, 25, 0, 123456, tzinfo=UTC)


def test_sim_clock() -> None:
    clock = SimClock(NOW)
    assert clock.frozen
    assert clock.now() == NOW
    clock.advance(1.5)
    assert clock.now_us() == to_us(NOW) + 1_500_000
    clock.set(datetime(2030, 1, 1, tzinfo=UTC))
    assert clock.now().year == 2030
    clock.unfreeze()
    assert not clock.frozen
    assert abs(clock.now_us() / 1e6 - time.time()) < 5
    clock.advance(3600)
    assert clock.now_us() / 1e6 - time.time() > 3500


def test_ids() -> None:
    assert crockford(0, 3) == "000"
    assert crockford(31, 2) == "0Z"
    value = ulid(1_700_000_000_000, 12345)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", value)
    assert value.startswith("01HF")  # ULID time prefix of Nov 2023


# ----------------------------------------------------------------------------- dataset
def test_page_keyset_semantics() -> None:
    ds = Dataset(1, 25, clock=SimClock(NOW), tie_fraction=0.4)
    everything = ds.ids("contacts")
    seen: list[str] = []
    after = None
    while True:
        page = ds.page("contacts", order="asc", filters={}, after=after, limit=4)
        seen += [r["id"] for r in page.records]
        after = page.last_key
        if not page.has_more:
            break
    assert seen == everything
    page = ds.page("contacts", order="desc", filters={}, after=None, limit=100)
    assert [r["id"] for r in page.records] == everything[::-1]
    assert not page.has_more
    assert page.last_key is not None


def test_create_with_shared_timestamp() -> None:
    ds = Dataset(1, 5, clock=SimClock(NOW))
    ids = ds.create("tags", 4, same_timestamp=True)
    assert len({ds.updated_at_us("tags", i) for i in ids}) == 1
    rec = ds.get("tags", ids[0])
    assert rec is not None
    assert rec["created_at"] == rec["updated_at"]
    assert len({ds.get("tags", i)["name"] for i in ids}) == 4  # type: ignore[index]


def test_dataset_reset_and_validation() -> None:
    ds = Dataset(1, 5, clock=SimClock(NOW))
    first = ds.records("users")
    ds.mutate("users", 2)
    ds.reset()
    assert ds.records("users") == first
    ds.reset(seed=2, records_per_resource=3)
    assert ds.count("users") == 3
    with pytest.raises(ValueError, match="unknown resource"):
        ds.mutate("deals")
    with pytest.raises(ValueError, match="precision"):
        ds.set_precision("ns")
    assert ds.mutate("users", 10) != []  # clamped to what exists
    assert ds.count("users") == 3


def test_deleted_records_keep_their_state() -> None:
    ds = Dataset(1, 5, clock=SimClock(NOW))
    rid = ds.ids("companies")[0]
    assert ds.soft_delete("companies", [rid]) == [rid]
    assert ds.soft_delete("companies", [rid]) == []
    assert ds.is_deleted("companies", rid)
    assert ds.deleted_ids("companies") == [rid]
    assert ds.count("companies") == 4
    assert ds.count("companies", include_deleted=True) == 5
    assert ds.delete_random("companies", 2) != []
    assert ds.count("companies") == 2


# ----------------------------------------------------------------------------- listing
def test_cursor_codec_roundtrip_and_secret() -> None:
    shape = QueryShape("contacts", "asc", (("gte", 5),))
    token = CursorCodec(b"a").encode(shape, (7, "cnt_X"))
    assert CursorCodec(b"a").decode(token) == (shape, (7, "cnt_X"))
    with pytest.raises(ProblemError) as err:
        CursorCodec(b"b").decode(token)
    assert err.value.status == 400


def test_parse_list_query_defaults() -> None:
    req = parse_list_query("tags", [], CursorCodec(b"k"))
    assert req.limit == 25
    assert req.shape.order == "desc"
    assert req.shape.filters == ()
    assert req.after is None
    req = parse_list_query("tags", [("cursor", "")], CursorCodec(b"k"))
    assert req.after is None


# ----------------------------------------------------------------------------- faults
def test_fault_rules_in_order_and_delay_combines() -> None:
    faults = FaultInjector(seed=1)
    faults.slow(50, count=2)
    faults.rate_limit(count=1, retry_after=4, resource="users")
    faults.server_error(502, count=1)
    first = faults.decide("users")
    assert (first.kind, first.status, first.retry_after, first.delay_ms) == ("status", 429, 4, 50)
    second = faults.decide("users")
    assert (second.kind, second.status, second.delay_ms) == ("status", 502, 50)
    third = faults.decide("users")
    assert (third.kind, third.delay_ms) == (None, 0)
    assert faults.rules() == []
    assert faults.fired_total == 4


def test_fault_rule_without_count_persists_until_removed() -> None:
    faults = FaultInjector()
    rid = faults.drop_connection(count=None, resource="tags")
    assert faults.decide("contacts").kind is None
    assert [faults.decide("tags").kind for _ in range(3)] == ["drop"] * 3
    assert faults.remove(rid)
    assert not faults.remove(rid)


# ----------------------------------------------------------------------------- runner
def test_run_simulator_stops_on_event(capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_simulator(port=0, records=3, stop_event=stop))
    )
    thread.start()
    deadline = time.monotonic() + 10
    line = ""
    while time.monotonic() < deadline and "listening" not in line:
        line += capsys.readouterr().out
        time.sleep(0.02)
    match = re.search(r"listening on (http://\S+)", line)
    assert match, line
    with httpx.Client(base_url=match.group(1), timeout=5) as c:
        r = c.get("/v2/tags", headers={"Authorization": "sk-apik_simulator.localdevsecret"})
        assert r.status_code == 200
    stop.set()
    thread.join(timeout=10)
    assert result == [0]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_module_entry_point_runs_until_sigterm() -> None:
    cmd = [
        sys.executable,
        "-m",
        "askelephant_simulator",
        "--port",
        "0",
        "--records",
        "10",
        "--seed",
        "3",
        "--now",
        "2026-03-10T12:00:00Z",
        "--timestamp-precision",
        "us",
        "--extra-fields",
        '{"x_extra": 1}',
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=20)
        sel.close()
        assert ready, "simulator did not start"
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line
        base = match.group(1)
        with httpx.Client(base_url=base, timeout=5) as c:
            r = c.get("/v2/tags", headers={"Authorization": "sk-apik_simulator.localdevsecret"})
            assert r.status_code == 200
            rec = r.json()["data"][0]
            assert rec["x_extra"] == 1
            assert re.fullmatch(r".*\.\d{6}Z", rec["updated_at"])
            assert r.headers["date"] == "Tue, 10 Mar 2026 12:00:00 GMT"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


# ----------------------------------------------------------------------------- no product import
# The simulator keeps its own copies of the resource names and of the Svix signature (it must
# not import the product it stands in front of); these tests catch a drift from the product's.
def test_the_simulator_resources_are_the_products() -> None:
    from producer.schemas import RESOURCES as PRODUCT_RESOURCES
    from producer.webhooks.delivery import OBJECT_RESOURCES

    assert RESOURCES == PRODUCT_RESOURCES
    assert {r: o for o, r in OBJECT_RESOURCES.items()} == WEBHOOK_OBJECTS


@settings(max_examples=50, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=48),
    text=st.text(max_size=256),  # webhook bodies are JSON text
    stamp=st.integers(0, 4_102_444_800),  # up to 2100: the product's datetime must hold it
)
def test_the_simulator_signature_verifies_with_the_product_and_svix(
    key: bytes, text: str, stamp: int
) -> None:
    from producer.webhooks.delivery import BadSignatureError, Verifier, sign

    body = text.encode()
    secret = "whsec_" + base64.b64encode(key).decode()
    assert svix_sign(secret, "msg_1", stamp, body) == sign(secret, "msg_1", stamp, body)
    # Svix refuses stale timestamps, so verification uses a fresh one.
    fresh = svix_sign(secret, "msg_1", time.time(), body)
    assert Verifier([secret]).verify(body, fresh) == "msg_1"
    other = "whsec_" + base64.b64encode(key + b"x").decode()
    with pytest.raises(BadSignatureError):
        Verifier([other]).verify(body, fresh)


def test_the_simulator_does_not_import_the_product() -> None:
    # Every module of the package, then any `producer` module loaded (sys.exit of a non-empty
    # list exits 1 and prints it).
    code = (
        "import sys, pkgutil, importlib, askelephant_simulator as s; "
        "[importlib.import_module(m.name) "
        "for m in pkgutil.iter_modules(s.__path__, 'askelephant_simulator.') "
        "if m.name != 'askelephant_simulator.__main__']; "
        "sys.exit(sorted(m for m in sys.modules if m.split('.')[0] == 'producer') or None)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.sync.checkpoint import (
    MAX_RESET_HISTORY,
    Checkpoint,
    CheckpointFormatError,
    ResetEntry,
    reset_checkpoint,
)
from producer.sync.timestamps import InvalidTimestampError


def make(**kw: object) -> Checkpoint:
    base: dict[str, object] = {
        "resource": "contacts",
        "updated_at": "2026-03-04T18:25:00Z",
        "boundary_ids": frozenset({"cnt_A", "cnt_B"}),
        "run_id": "run-1",
        "completed_at": "2026-03-05T00:00:00Z",
        "record_count": 7,
    }
    base.update(kw)
    return Checkpoint(**base)  # type: ignore[arg-type]


def test_json_round_trip_keeps_every_field() -> None:
    cp = make()
    again = Checkpoint.from_json(cp.to_json())
    assert again == cp
    body = json.loads(cp.to_json())
    assert body["updated_at"] == "2026-03-04T18:25:00Z"  # as the API wrote it
    assert body["boundary_ids"] == ["cnt_A", "cnt_B"]


def test_unknown_fields_from_newer_writers_survive_a_rewrite() -> None:
    body = json.loads(make().to_json())
    body["progress"] = {"cursor": "abc"}
    again = Checkpoint.from_json(json.dumps(body))
    assert json.loads(again.to_json())["progress"] == {"cursor": "abc"}


def test_filter_value_is_the_same_instant_in_utc() -> None:
    cp = make(updated_at="2026-03-04T20:25:00.123456+02:00")
    assert cp.filter_value == "2026-03-04T18:25:00.123456Z"


def test_skips_exactly_boundary_versions() -> None:
    cp = make()
    assert cp.instant is not None
    assert cp.skips("cnt_A", cp.instant)
    assert not cp.skips("cnt_C", cp.instant)
    assert not cp.skips("cnt_A", cp.instant + 1)
    assert not make(boundary_complete=False, boundary_ids=frozenset()).skips("cnt_A", cp.instant)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"updated_at": "2026-03-04T18:25:00Z"}',
        b'{"resource": "contacts", "updated_at": "yesterday"}',
        b'{"resource": "contacts", "updated_at": 5}',
        b'{"resource": "contacts", "updated_at": null, "boundary_ids": "x"}',
        b'{"resource": "contacts", "updated_at": null, "format": 99}',
        b"\xff\xfe",
    ],
)
def test_unreadable_checkpoints_raise(raw: bytes) -> None:
    with pytest.raises(CheckpointFormatError):
        Checkpoint.from_json(raw)


def test_constructing_with_a_bad_timestamp_raises() -> None:
    with pytest.raises(InvalidTimestampError):
        make(updated_at="2026-03-04")


def test_reset_records_who_and_from_what() -> None:
    previous = make()
    cp = reset_checkpoint(
        "contacts",
        "2026-01-01T00:00:00Z",
        previous=previous,
        reset_by="alice@host",
        completed_at="2026-03-06T00:00:00Z",
        run_id="reset-1",
    )
    again = Checkpoint.from_json(cp.to_json())
    assert again.reset_by == "alice@host"
    assert again.reset_from == "2026-03-04T18:25:00Z"
    assert again.boundary_ids == frozenset()
    full = reset_checkpoint(
        "contacts", None, previous=previous, reset_by="bob", completed_at="x", run_id="r"
    )
    assert full.filter_value is None


def _reset(
    previous: Checkpoint | None, by: str, to: str | None = "2026-01-01T00:00:00Z"
) -> Checkpoint:
    return reset_checkpoint(
        "contacts",
        to,
        previous=previous,
        reset_by=by,
        completed_at="2026-03-06T00:00:00Z",
        run_id="r",
    )


def test_reset_history_round_trips_and_is_carried_forward() -> None:
    reset = _reset(make(), "alice@host")
    assert [(e.by, e.from_, e.to) for e in reset.resets] == [
        ("alice@host", "2026-03-04T18:25:00Z", "2026-01-01T00:00:00Z")
    ]
    again = Checkpoint.from_json(reset.to_json())
    assert again == reset
    assert json.loads(reset.to_json())["resets"] == [
        {
            "by": "alice@host",
            "at": "2026-03-06T00:00:00Z",
            "from": "2026-03-04T18:25:00Z",
            "to": "2026-01-01T00:00:00Z",
        }
    ]
    # The next run's checkpoint is built without history; carrying keeps the audit.
    after_run = make(updated_at="2026-03-07T00:00:00Z").carry_history_from(again)
    assert after_run.resets == reset.resets
    assert Checkpoint.from_json(after_run.to_json()).resets == reset.resets
    second = _reset(after_run, "bob@host", None)
    assert [e.by for e in second.resets] == ["alice@host", "bob@host"]
    assert second.resets[-1].from_ == "2026-03-07T00:00:00Z"
    assert second.resets[-1].to is None


def test_reset_history_keeps_the_last_20() -> None:
    checkpoint: Checkpoint | None = None
    for i in range(25):
        checkpoint = _reset(checkpoint, f"op{i}")
    assert checkpoint is not None
    assert len(checkpoint.resets) == 20
    assert [e.by for e in checkpoint.resets] == [f"op{i}" for i in range(5, 25)]


def test_carry_history_keeps_a_checkpoints_own_history() -> None:
    own = _reset(None, "carol")
    other = _reset(None, "dave")
    assert own.carry_history_from(other) is own
    assert own.carry_history_from(None) is own


@pytest.mark.parametrize(
    "resets", ['"x"', '[{"by": 1}]', '[{"by": "a", "at": 5}]', '[{"by": "a", "at": "t", "to": 3}]']
)
def test_malformed_reset_history_is_unreadable(resets: str) -> None:
    raw = f'{{"resource": "contacts", "updated_at": null, "resets": {resets}}}'
    with pytest.raises(CheckpointFormatError, match="resets"):
        Checkpoint.from_json(raw)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_instants = st.sampled_from(
    [None, "2026-03-04T18:25:00Z", "2026-03-04T20:25:00.123456+02:00", "1999-12-31T23:59:59Z"]
)
_entries = st.builds(
    ResetEntry,
    by=_text,
    at=_text,
    from_=_instants,
    to=_instants,
    note=st.none() | _text,
)


@given(
    updated_at=_instants,
    ids=st.frozensets(_text, max_size=4),
    resets=st.lists(_entries, max_size=MAX_RESET_HISTORY).map(tuple),
    reset_by=st.none() | _text,
)
def test_json_round_trip_keeps_every_field_including_reset_history(
    updated_at: str | None,
    ids: frozenset[str],
    resets: tuple[ResetEntry, ...],
    reset_by: str | None,
) -> None:
    checkpoint = make(
        updated_at=updated_at,
        boundary_ids=ids,
        resets=resets,
        reset_by=reset_by,
        reset_from=updated_at if reset_by is not None else None,
    )
    assert Checkpoint.from_json(checkpoint.to_json()) == checkpoint

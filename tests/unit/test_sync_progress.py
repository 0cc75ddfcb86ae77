"""Progress marks on the checkpoint topic: one traversal's, and a sliced export's windows."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.sync.checkpoint import Checkpoint, CheckpointFormatError
from producer.sync.progress import Progress, WindowProgress

pytestmark = pytest.mark.unit

MARK = Checkpoint(
    "contacts",
    "2026-03-01T00:00:00.5Z",
    boundary_ids=frozenset({"c1"}),
    ahead=frozenset({("c2", 1_772_323_201_000_000)}),
    run_id="r",
)


def _progress(**overrides: object) -> Progress:
    fields: dict[str, object] = {
        "resource": "contacts",
        "mark": MARK,
        "snapshot": True,
        "based_on": None,
        "run_id": "r",
        "pages": 7,
        "written_at": "2026-03-01T00:00:09Z",
        **overrides,
    }
    return Progress(**fields)  # type: ignore[arg-type]


windows = st.lists(
    st.builds(
        WindowProgress,
        gte=st.just("2026-01-01T00:00:00.000Z"),
        lt=st.none() | st.just("2026-02-01T00:00:00.000Z"),
        mark=st.none() | st.just(MARK),
        done=st.booleans(),
        horizon=st.none() | st.integers(0, 2**62),
    ),
    min_size=1,
    max_size=5,
).map(tuple)


def test_one_traversals_mark_round_trips() -> None:
    progress = _progress()
    assert Progress.from_json(progress.to_json()) == progress
    assert "windows" not in json.loads(progress.to_json())  # the format it always had


@given(windows)
def test_a_sliced_exports_windows_round_trip(saved: tuple[WindowProgress, ...]) -> None:
    progress = _progress(mark=None, windows=saved)
    assert Progress.from_json(progress.to_json()) == progress


@pytest.mark.parametrize(
    "body",
    [
        {"mark": None},  # neither a mark nor windows
        {"mark": None, "windows": ["not a window"]},
        {"mark": None, "windows": [{"gte": "x"}]},  # no `done`
        {"windows": [{"gte": "x", "done": True, "mark": {"resource": 1}}]},
    ],
)
def test_unreadable_progress_is_a_format_error(body: dict[str, object]) -> None:
    raw = {**json.loads(_progress().to_json()), **body}
    with pytest.raises(CheckpointFormatError):
        Progress.from_json(json.dumps(raw))

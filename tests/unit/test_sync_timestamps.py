from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.sync.timestamps import (
    InvalidTimestampError,
    format_instant,
    from_micros,
    instant_micros,
    parse_instant,
    to_micros,
)


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-04T18:25:00Z",
        "2026-03-04T18:25:00.000Z",
        "2026-03-04T18:25:00.000000+00:00",
        "2026-03-04T20:25:00+02:00",
        "2026-03-04T13:25:00-0500",
        "2026-03-04t18:25:00.000000000z",
    ],
)
def test_renderings_of_one_instant_compare_equal(text: str) -> None:
    assert parse_instant(text) == datetime(2026, 3, 4, 18, 25, tzinfo=UTC)


def test_instants_are_not_compared_as_strings() -> None:
    # As strings "…00Z" > "…00.5Z"; as instants the half second is later.
    assert instant_micros("2026-03-04T18:25:00.5Z") > instant_micros("2026-03-04T18:25:00Z")


def test_sub_microsecond_digits_truncate_never_round_up() -> None:
    assert instant_micros("2026-03-04T18:25:00.123456999Z") == instant_micros(
        "2026-03-04T18:25:00.123456Z"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-03-04",
        "2026-03-04T18:25:00",
        "yesterday",
        "2026-13-04T18:25:00Z",
        "2026-03-04T25:00Z",
    ],
)
def test_garbage_and_zone_less_values_are_rejected(text: str) -> None:
    with pytest.raises(InvalidTimestampError):
        parse_instant(text)


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidTimestampError):
        parse_instant(1234)  # type: ignore[arg-type]


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(InvalidTimestampError):
        to_micros(datetime(2026, 1, 1))


@given(st.integers(min_value=0, max_value=4_102_444_800_000_000))
def test_format_round_trips_exactly(micros: int) -> None:
    text = format_instant(micros)
    assert text.endswith("Z")
    assert instant_micros(text) == micros
    assert to_micros(from_micros(micros)) == micros

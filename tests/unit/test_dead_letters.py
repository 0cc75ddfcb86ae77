"""Dead-letter format and the byte-exact record texts it keeps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.api.raw_json import RawJsonError, array_item_texts
from producer.pipeline.dead_letters import TOO_LARGE, DeadLetter

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
spaces = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])


@given(
    items=st.lists(json_values, max_size=6),
    gaps=st.lists(spaces, min_size=20, max_size=20),
    ascii_only=st.booleans(),
    extra=st.dictionaries(st.sampled_from(["object", "has_more", "z"]), json_values, max_size=3),
)
def test_each_item_text_is_cut_exactly_from_the_body(
    items: list[Any], gaps: list[str], ascii_only: bool, extra: dict[str, Any]
) -> None:
    texts = [json.dumps(item, ensure_ascii=ascii_only, indent=None) for item in items]
    separator = f"{gaps[0]},{gaps[1]}"
    array = f"[{gaps[2]}{separator.join(texts)}{gaps[3]}]"
    members = [f"{json.dumps(k)}{gaps[4]}:{gaps[5]}{json.dumps(v)}" for k, v in extra.items()]
    members.insert(len(members) // 2, f'"data"{gaps[6]}:{gaps[7]}{array}')
    body = f"{gaps[8]}{{{gaps[9]}{(',' + gaps[10]).join(members)}{gaps[11]}}}{gaps[12]}".encode()
    assert json.loads(body)["data"] == items  # a valid body
    assert array_item_texts(body) == texts


def test_a_body_without_a_data_array_is_an_error() -> None:
    with pytest.raises(RawJsonError):
        array_item_texts(b'{"object": "list"}')


def test_headers_round_trip() -> None:
    letter = DeadLetter(
        resource="engagements",
        reason=TOO_LARGE,
        message="event of 3000000 bytes exceeds ...",
        value=b'{"id": "e1"}',
        run_id="run-1",
        producer_id="p1",
        topic="askelephant.engagements",
        request_id="req-9",
        page=3,
        position=41,
        record_id="e1",
        updated_at="2026-03-01T00:00:00Z",
        detail={"size": "3000000", "limit": "2097152"},
    )
    headers = dict(letter.headers())
    assert headers["resource"] == b"engagements"
    assert headers["reason"] == b"too_large"
    assert headers["size"] == b"3000000"
    assert letter.key == b"e1"
    assert DeadLetter.from_message(letter.value, letter.headers()) == letter


def test_a_letter_without_id_has_no_key_and_no_id_header() -> None:
    letter = DeadLetter("tags", "missing_id", "no id", b"{}", "r", "p", "t")
    assert letter.key is None
    assert "record_id" not in dict(letter.headers())

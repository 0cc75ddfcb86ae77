"""PURE: where each item of a list response's `data` array sits in the body, byte for byte.

A dead letter keeps a record exactly as the API sent it (docs/dead-letters.md), not as Python
would re-serialise it (key order, escapes and number spellings would change). Only needed when
a record is dead-lettered, so the body is walked lazily then, with the same C scanner that
`json.loads` uses (`JSONDecoder.raw_decode`), which reports where each value ends.
"""

from __future__ import annotations

import json
import re
from typing import Final

_DECODER: Final = json.JSONDecoder()
_SPACE: Final = re.compile(r"[ \t\n\r]*")


class RawJsonError(ValueError):
    pass


def _skip(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    assert match is not None  # `*` always matches
    return match.end()


def _expect(text: str, pos: int, char: str) -> int:
    if not text.startswith(char, pos):
        raise RawJsonError(f"expected {char!r} at {pos}")
    return pos + 1


def array_item_texts(body: bytes, key: str = "data") -> list[str]:
    """The exact text of each item of the top-level object's `key` array (the last such key,
    as `json.loads` keeps the last of duplicate keys)."""
    text = body.decode("utf-8")
    pos = _expect(text, _skip(text, 0), "{")
    found: list[str] | None = None
    pos = _skip(text, pos)
    if text.startswith("}", pos):
        return []
    while True:
        name, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, _expect(text, _skip(text, pos), ":"))
        if name == key and text.startswith("[", pos):
            found, pos = _items(text, pos)
        else:
            _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text.startswith("}", pos):
            break
        pos = _skip(text, _expect(text, pos, ","))
    if found is None:
        raise RawJsonError(f"no {key!r} array")
    return found


def _items(text: str, pos: int) -> tuple[list[str], int]:
    items: list[str] = []
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return items, pos + 1
    while True:
        _, end = _DECODER.raw_decode(text, pos)
        items.append(text[pos:end])
        pos = _skip(text, end)
        if text.startswith("]", pos):
            return items, pos + 1
        pos = _skip(text, _expect(text, pos, ","))

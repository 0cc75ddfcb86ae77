"""Recognising an exactly-once lane another instance took over (the same transactional id
initialised elsewhere fences this producer).

Its own module, below both the run sink and the transactional one: the shared produce path
and the delivery reports must tell a fenced lane apart too, and the transactional run sink
builds on the at-least-once one, so neither may import the other for this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from confluent_kafka import KafkaError, KafkaException

from producer.pipeline.ports import LaneFencedError

_FENCED_CODES: Final = frozenset(
    code
    for code in (
        getattr(KafkaError, "_FENCED", None),
        getattr(KafkaError, "PRODUCER_FENCED", None),
        getattr(KafkaError, "INVALID_PRODUCER_EPOCH", None),
    )
    if code is not None
)


def is_fenced(error: KafkaError) -> bool:
    return error.code() in _FENCED_CODES


def fenced_error(error: KafkaError, where: str) -> LaneFencedError:
    return LaneFencedError(
        f"the exactly-once lane of {where} was taken over by another instance with the same "
        f"PRODUCER_ID ({error.str()}); this instance stops writing"
    )


def transactional(call: Callable[[], object], resource: str) -> None:
    """Run a transactional API call; a fenced producer becomes `LaneFencedError`."""
    try:
        call()
    except KafkaException as exc:
        if is_fenced(exc.args[0]):
            raise fenced_error(exc.args[0], resource) from None
        raise

"""topic_config() asks again while a just-created topic is still unknown to the broker."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from producer.kafka.admin import topic_config

pytestmark = pytest.mark.unit


class _Entry:
    def __init__(self, value: str) -> None:
        self.value = value


class FakeAdmin:
    """describe_configs() fails with `errors` in order, then answers with `config`."""

    def __init__(self, errors: list[int], config: dict[str, str]) -> None:
        self.errors = list(errors)
        self.config = config
        self.calls = 0

    def describe_configs(self, resources: list[Any], request_timeout: float) -> dict[Any, Any]:
        self.calls += 1
        future: Future[dict[str, _Entry]] = Future()
        if self.errors:
            future.set_exception(KafkaException(KafkaError(self.errors.pop(0))))
        else:
            future.set_result({k: _Entry(v) for k, v in self.config.items()})
        return {resources[0]: future}


def test_a_topic_unknown_for_a_moment_is_asked_again() -> None:
    unknown = KafkaError.UNKNOWN_TOPIC_OR_PART
    admin = FakeAdmin([unknown, unknown], {"cleanup.policy": "compact"})
    assert topic_config(admin, "t") == {"cleanup.policy": "compact"}  # type: ignore[arg-type]
    assert admin.calls == 3


def test_other_errors_and_a_topic_that_stays_unknown_are_raised() -> None:
    denied = FakeAdmin([KafkaError.TOPIC_AUTHORIZATION_FAILED], {})
    with pytest.raises(KafkaException):
        topic_config(denied, "t")  # type: ignore[arg-type]
    assert denied.calls == 1
    missing = FakeAdmin([KafkaError.UNKNOWN_TOPIC_OR_PART] * 1000, {})
    with pytest.raises(KafkaException):
        topic_config(missing, "t", settle_s=0.3)  # type: ignore[arg-type]
    assert 2 <= missing.calls < 1000

"""Topic creation and the checks that keep the checkpoint topic safe."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

log = logging.getLogger(__name__)
TIMEOUT_S = 30.0


class TopicConfigError(RuntimeError):
    """An existing topic is configured in a way that would lose data."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = -1
    replication_factor: int = -1
    config: dict[str, str] = field(default_factory=dict)


def ensure_topics(admin: AdminClient, specs: Iterable[TopicSpec]) -> list[str]:
    """Create the topics that are missing; return the names created."""
    specs = list(specs)
    existing = set(admin.list_topics(timeout=TIMEOUT_S).topics)
    missing = [s for s in specs if s.name not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    config=s.config,
                )
                for s in missing
            ],
            request_timeout=TIMEOUT_S,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
                log.info("created topic %s", name, extra={"topic": name})
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    return created


def ensure_compacted(admin: AdminClient, topic: str, *, replication_factor: int = -1) -> None:
    """Create `topic` compacted if missing; refuse an existing topic that is not compacted."""
    ensure_topics(
        admin,
        [TopicSpec(topic, 1, replication_factor, {"cleanup.policy": "compact"})],
    )
    policy = topic_config(admin, topic).get("cleanup.policy", "")
    if "compact" not in policy.split(","):
        raise TopicConfigError(
            f"checkpoint topic {topic!r} has cleanup.policy={policy!r}; it must be 'compact' "
            "or checkpoints would be deleted by retention. Fix the topic or choose another "
            "CHECKPOINT_TOPIC."
        )


def topic_config(admin: AdminClient, topic: str, *, settle_s: float = 10.0) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + settle_s
    while True:
        try:
            future = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource]
            result = future.result()
            return {name: entry.value for name, entry in result.items()}
        except KafkaException as exc:
            # A topic created a moment ago can still be unknown to the broker that answers
            # (its metadata lags the controller): ask again for a few seconds, not forever.
            unknown = exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)

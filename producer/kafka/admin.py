"""Topic creation and the checks that keep the checkpoint topic safe."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from producer.kafka import TIMEOUT_S

log = logging.getLogger(__name__)


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


def ensure_compacted(admin: AdminClient, topic: str, *, replication_factor: int = -1) -> bool:
    """Create `topic` with `cleanup.policy=compact` if missing; refuse an existing topic whose
    policy is anything else. Returns whether it was created here.

    An existing topic's config is read BEFORE anything is created. A topic created here has
    our config, so it is not read back: the broker may not know the new topic's config for a
    moment (UNKNOWN_TOPIC_OR_PART), and there is nothing to check.
    """
    if topic_exists(admin, topic):
        check_compacted(admin, topic)
        return False
    created = ensure_topics(
        admin, [TopicSpec(topic, 1, replication_factor, {"cleanup.policy": "compact"})]
    )
    if topic not in created:  # someone else created it meanwhile: check theirs
        check_compacted(admin, topic)
    return bool(created)


def topic_exists(admin: AdminClient, topic: str) -> bool:
    return topic in admin.list_topics(timeout=TIMEOUT_S).topics


def check_compacted(admin: AdminClient, topic: str) -> None:
    """Refuse a checkpoint topic that retention could empty: `compact` and nothing else."""
    entry = describe_topic_config(admin, topic).get("cleanup.policy")
    policy = entry.value if entry is not None else ""
    if sorted(p.strip() for p in policy.split(",")) != ["compact"]:
        raise TopicConfigError(
            f"checkpoint topic {topic!r} has cleanup.policy={policy!r}; it must be exactly "
            "'compact' (with 'delete', retention deletes checkpoints and the next run starts "
            "over). Set cleanup.policy=compact on the topic or choose another CHECKPOINT_TOPIC."
        )


def describe_topic_config(
    admin: AdminClient, topic: str, *, settle_s: float = TIMEOUT_S
) -> dict[str, Any]:
    """The topic's config entries, waiting (bounded) while the broker does not know it yet.

    Only reached for a topic that exists (listed, or another client just created it); a
    broker answers UNKNOWN_TOPIC_OR_PART until the new topic's metadata reached it.
    """
    deadline = time.monotonic() + settle_s
    while True:
        try:
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
            future = admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource]
            return dict(future.result())
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


def topic_config(admin: AdminClient, topic: str, *, settle_s: float = TIMEOUT_S) -> dict[str, str]:
    """The topic's config values (waits while a just-created topic is not known yet)."""
    config = describe_topic_config(admin, topic, settle_s=settle_s)
    return {name: entry.value for name, entry in config.items()}

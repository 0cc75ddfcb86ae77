"""Wires the real adapters from `Settings`: topics, registry, sink, checkpoints, API."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from producer import schemas
from producer.api import ApiClient
from producer.api.source import ApiSource
from producer.config import Settings
from producer.kafka.admin import TopicSpec, ensure_compacted, ensure_topics, topic_config
from producer.kafka.checkpoints import CheckpointStore
from producer.kafka.publisher import DeliveryObserver, KafkaSink, TopicTarget, new_producer
from producer.observability.health import HealthState, default_liveness_timeout
from producer.observability.metrics import ProducerMetrics
from producer.service import RunInterruptedError, SyncService
from producer.sync.timestamps import from_micros

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 2.0


def open_checkpoint_store(settings: Settings, producer: Producer | None = None) -> CheckpointStore:
    """Ensure the compacted checkpoint topic exists and read it to its end."""
    admin = AdminClient(settings.kafka_config())
    ensure_compacted(
        admin, settings.checkpoint_topic, replication_factor=settings.topic_replication_factor
    )
    store = CheckpointStore(
        settings.kafka_config(),
        settings.checkpoint_topic,
        settings.producer_id,
        producer or new_producer(settings.kafka_config()),
    )
    store.load()
    return store


@dataclass
class App:
    settings: Settings
    service: SyncService
    sink: KafkaSink
    store: CheckpointStore
    metrics: ProducerMetrics
    health: HealthState
    stop: threading.Event
    _clients: dict[str, ApiClient] = field(default_factory=dict)

    def close(self, flush_timeout_s: float = 5.0) -> int:
        """Flush what was produced, then close the API clients (a request still in flight
        fails and its run commits nothing); returns the messages left unacknowledged."""
        left = self.sink.close(flush_timeout_s)
        for client in self._clients.values():
            client.close()
        return left


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The change topics and the dead-letter topic, as the producer creates them."""
    partitions, replication = settings.topic_partitions, settings.topic_replication_factor
    specs = [
        TopicSpec(
            settings.topic_for(r),
            partitions,
            replication,
            {"max.message.bytes": str(settings.max_message_bytes_for(r))},
        )
        for r in settings.resources
    ]
    # Dead letters are kept until an operator deletes them: they are the only copy of a
    # record that did not reach its change topic (docs/dead-letters.md).
    dead_letters = {
        "max.message.bytes": str(settings.dead_letter_max_message_bytes),
        "retention.ms": "-1",
    }
    specs.append(TopicSpec(settings.dead_letter_topic, partitions, replication, dead_letters))
    return specs


def effective_targets(
    admin: AdminClient, settings: Settings, created: Collection[str] = ()
) -> tuple[dict[str, TopicTarget], TopicTarget]:
    """Per resource, the change topic and the largest event it accepts; and the dead-letter
    topic's. An existing topic created with a lower `max.message.bytes` than configured keeps
    its own (the producer does not alter topics it did not create): a WARNING says so.
    Topics in `created` were just created with the configured limit: not asked again (a
    topic's config can be unknown to the broker for a moment after its creation)."""

    def target(topic: str, configured: int) -> TopicTarget:
        if topic in created:
            return TopicTarget(topic, configured)
        actual = topic_config(admin, topic).get("max.message.bytes")
        limit = configured
        if actual is not None and actual.isdigit() and int(actual) < configured:
            limit = int(actual)
            log.warning(
                "topic %s has max.message.bytes=%s, below the configured %d: larger events "
                "go to the dead-letter topic; raise it with kafka-configs.sh --alter",
                topic,
                actual,
                configured,
                extra={"topic": topic},
            )
        return TopicTarget(topic, limit)

    targets = {
        r: target(settings.topic_for(r), settings.max_message_bytes_for(r))
        for r in settings.resources
    }
    dead_letters = target(settings.dead_letter_topic, settings.dead_letter_max_message_bytes)
    return targets, dead_letters


def open_sink(
    settings: Settings,
    admin: AdminClient,
    observer: DeliveryObserver,
    stop: threading.Event | None = None,
) -> tuple[KafkaSink, CheckpointStore]:
    """Topics, producer, registered schemas and checkpoints: everything that writes to Kafka."""
    created = ensure_topics(admin, topic_specs(settings))
    targets, dead_letter_target = effective_targets(admin, settings, created)
    largest = max(t.max_message_bytes for t in [*targets.values(), dead_letter_target])
    producer = new_producer(settings.kafka_config(), message_max_bytes=largest)
    registry = SchemaRegistryClient(settings.registry_config())
    store = open_checkpoint_store(settings, producer)
    sink = KafkaSink(
        producer,
        registry,
        targets=targets,
        schemas={r: schemas.schema_str(r) for r in settings.resources},
        dead_letter=dead_letter_target,
        checkpoints=store,
        observer=observer,
        producer_id=settings.producer_id,
        stop=stop,
    )
    sink.register_schemas()
    return sink, store


def build_app(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    metrics: ProducerMetrics | None = None,
    health: HealthState | None = None,
) -> App:
    """Connect everything; `metrics`/`health` may already be served while this runs."""
    stop = stop or threading.Event()
    credentials = settings.require_credentials()
    metrics = metrics or ProducerMetrics(settings.resources)
    admin = AdminClient(settings.kafka_config())
    sink, store = open_sink(settings, admin, metrics, stop)
    registry = sink.registry

    for resource, checkpoint in store.all().items():
        if resource in settings.resources and checkpoint.instant is not None:
            metrics.set_watermark(resource, from_micros(checkpoint.instant))
            metrics.complete_up_to(resource, from_micros(checkpoint.instant))
    metrics.set_queue_length_source(sink.queue_length)

    health = health or new_health(settings)
    health.add_check("kafka", _kafka_probe(admin))
    health.add_check("schema_registry", _registry_probe(registry))
    health.set_check_result("checkpoints_loaded", True, f"{len(store.all())} checkpoint(s)")

    def interruptible_sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise RunInterruptedError

    clients: dict[str, ApiClient] = {}

    def source_for(resource: str) -> ApiSource:
        if resource not in clients:
            clients[resource] = ApiClient(
                credentials,
                base_url=settings.api_url,
                timeout_seconds=settings.http_timeout_seconds,
                max_retry_wait_seconds=settings.max_retry_wait_seconds,
                observer=metrics,
                sleep=interruptible_sleep,
            )
        return ApiSource(clients[resource], resource, settings.page_size)

    service = SyncService(
        resources=settings.resources,
        topic_for=settings.topic_for,
        source_for=source_for,
        sink=sink,
        checkpoints=store,
        observer=metrics,
        liveness=health,
        producer_id=settings.producer_id,
        dead_letter_policy="fail" if settings.dead_letter_policy == "fail" else "dead-letter",
        poll_interval_s=settings.poll_interval_seconds,
        stop=stop,
    )
    health.add_check("api", service.api_health)
    return App(settings, service, sink, store, metrics, health, stop, clients)


def new_health(settings: Settings) -> HealthState:
    return HealthState(
        liveness_timeout_s=default_liveness_timeout(settings.poll_interval_seconds),
        stall_timeout_s=settings.liveness_stall_seconds,
    )


def _kafka_probe(admin: AdminClient) -> Callable[[], tuple[bool, str]]:
    def probe() -> tuple[bool, str]:
        metadata = admin.list_topics(timeout=PROBE_TIMEOUT_S)
        return True, f"{len(metadata.brokers)} broker(s)"

    return probe


def _registry_probe(registry: SchemaRegistryClient) -> Callable[[], tuple[bool, str]]:
    def probe() -> tuple[bool, str]:
        return True, f"{len(registry.get_subjects())} subject(s)"

    return probe

"""Wires the real adapters from `Settings`: topics, registry, publisher, checkpoints, API."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from producer import schemas
from producer.api import ApiClient
from producer.config import Settings
from producer.kafka.admin import TopicSpec, ensure_compacted, ensure_topics
from producer.kafka.checkpoints import CheckpointStore
from producer.kafka.publisher import EventPublisher, new_producer
from producer.observability.health import HealthState, default_liveness_timeout
from producer.observability.metrics import ProducerMetrics
from producer.service import RunInterruptedError, SyncService
from producer.sync.timestamps import from_micros

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
    publisher: EventPublisher
    store: CheckpointStore
    metrics: ProducerMetrics
    health: HealthState
    stop: threading.Event
    _clients: dict[str, ApiClient] = field(default_factory=dict)

    def close(self, flush_timeout_s: float = 5.0) -> int:
        """Flush what was produced; returns the number of messages left undelivered."""
        for client in self._clients.values():
            client.close()
        return self.publisher.close(flush_timeout_s)


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
    kafka_config = settings.kafka_config()
    admin = AdminClient(kafka_config)
    ensure_topics(
        admin,
        [
            TopicSpec(
                settings.topic_for(r), settings.topic_partitions, settings.topic_replication_factor
            )
            for r in settings.resources
        ],
    )
    registry = SchemaRegistryClient(settings.registry_config())
    publisher = EventPublisher(
        kafka_config,
        registry,
        {settings.topic_for(r): schemas.schema_str(r) for r in settings.resources},
    )
    publisher.register_schemas()
    store = open_checkpoint_store(settings, publisher.producer)

    metrics = metrics or ProducerMetrics(settings.resources)
    for resource, checkpoint in store.all().items():
        if resource in settings.resources and checkpoint.instant is not None:
            metrics.set_watermark(resource, from_micros(checkpoint.instant))
    metrics.set_queue_length_source(publisher.queue_length)

    health = health or new_health(settings)
    health.add_check("kafka", _kafka_probe(admin))
    health.add_check("schema_registry", _registry_probe(registry))
    health.set_check_result("checkpoints_loaded", True, f"{len(store.all())} checkpoint(s)")

    def interruptible_sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise RunInterruptedError

    clients: dict[str, ApiClient] = {}

    def api_for(resource: str) -> ApiClient:
        if resource not in clients:
            clients[resource] = ApiClient(
                credentials,
                base_url=settings.api_url,
                timeout_seconds=settings.http_timeout_seconds,
                max_retry_wait_seconds=settings.max_retry_wait_seconds,
                observer=metrics,
                sleep=interruptible_sleep,
            )
        return clients[resource]

    service = SyncService(
        resources=settings.resources,
        topic_for=settings.topic_for,
        api_for=api_for,
        publisher=publisher,
        store=store,
        metrics=metrics,
        health=health,
        producer_id=settings.producer_id,
        page_size=settings.page_size,
        poll_interval_s=settings.poll_interval_seconds,
        stop=stop,
    )
    health.add_check("api", service.api_health)
    return App(settings, service, publisher, store, metrics, health, stop, clients)


def new_health(settings: Settings) -> HealthState:
    return HealthState(liveness_timeout_s=default_liveness_timeout(settings.poll_interval_seconds))


def _kafka_probe(admin: AdminClient) -> Callable[[], tuple[bool, str]]:
    def probe() -> tuple[bool, str]:
        metadata = admin.list_topics(timeout=PROBE_TIMEOUT_S)
        return True, f"{len(metadata.brokers)} broker(s)"

    return probe


def _registry_probe(registry: SchemaRegistryClient) -> Callable[[], tuple[bool, str]]:
    def probe() -> tuple[bool, str]:
        return True, f"{len(registry.get_subjects())} subject(s)"

    return probe

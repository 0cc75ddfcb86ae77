"""Wires the real adapters from `Settings`: topics, registry, sink, checkpoints, API."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from producer import schemas
from producer.api import ApiClient
from producer.api.budget import RateBudget
from producer.api.source import ApiSource
from producer.config import Settings
from producer.kafka.admin import (
    TopicConfigError,
    TopicSpec,
    check_compacted,
    ensure_compacted,
    ensure_topics,
    topic_config,
    topic_exists,
)
from producer.kafka.checkpoints import CheckpointStore
from producer.kafka.connect import ConnectionProblem, probe_cluster, registry_problem
from producer.kafka.deletes import DeleteStore
from producer.kafka.listings import ListingStore
from producer.kafka.publisher import DeliveryObserver, KafkaRunSink, TopicTarget, new_producer
from producer.kafka.reader import TopicReadError, scan_to_end
from producer.kafka.sink import KafkaSink
from producer.kafka.transactions import new_transactional_producer
from producer.observability.health import HealthState, default_liveness_timeout
from producer.observability.metrics import ProducerMetrics
from producer.pipeline.ports import Source
from producer.pipeline.prefetch import PrefetchingSource
from producer.reconcile import Reconciler
from producer.service import RunInterruptedError, SyncService
from producer.sync.timestamps import from_micros
from producer.webhooks.delivery import Verifier
from producer.webhooks.receiver import WebhookReceiver

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 2.0
STARTUP_TIMEOUT_S = 15.0
"""How long start-up waits for the brokers' metadata before giving up with a StartupError."""


class StartupError(RuntimeError):
    """Kafka, a topic or the schema registry is unusable at start-up.

    The message is the one line an operator needs: the component, its address, what went
    wrong and what to check (the CLI logs it as ONE ERROR line, no traceback).
    """

    def __init__(self, component: str, address: str, problem: str, check: str) -> None:
        super().__init__(f"{component} at {address}: {problem}. Check {check}.")
        self.component = component
        self.address = address


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and hasattr(exc.args[0], "str"):
        return str(exc.args[0].str())
    return str(exc) or type(exc).__name__


def check_kafka(settings: Settings, admin: AdminClient) -> None:
    """Fail fast, with one clear error, when the brokers cannot be reached.

    A probe of its own (producer.kafka.connect) watches librdkafka's errors: a refused login
    or certificate ends start-up at once, named, instead of after the whole timeout as a
    transport failure. `admin` connects by itself once the probe got through."""
    try:
        probe_cluster(settings.kafka_config(), STARTUP_TIMEOUT_S)
    except ConnectionProblem as exc:
        raise StartupError("Kafka", exc.address, str(exc), exc.check) from exc
    except KafkaException as exc:
        raise StartupError(
            "Kafka",
            settings.bootstrap_servers,
            f"no cluster metadata within {STARTUP_TIMEOUT_S:g}s ({_reason(exc)})",
            "KAFKA_BOOTSTRAP_SERVERS, that the brokers run and are reachable from here, and "
            "KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_* settings",
        ) from exc


def _topic_error(settings: Settings, topic: str, exc: BaseException) -> StartupError:
    if isinstance(exc, TopicConfigError):
        return StartupError(
            "checkpoint topic",
            f"{topic} on {settings.bootstrap_servers}",
            str(exc).rstrip("."),
            "the topic's cleanup.policy (set it to compact) or CHECKPOINT_TOPIC",
        )
    return StartupError(
        "Kafka topic",
        f"{topic} on {settings.bootstrap_servers}",
        f"cannot create or describe it ({_reason(exc)})",
        "this client's ACLs (create and describe topics), TOPIC_PARTITIONS and "
        "TOPIC_REPLICATION_FACTOR",
    )


def prepare_checkpoint_topic(settings: Settings, admin: AdminClient, *, create: bool) -> str:
    """Check (and with `create`, create) the checkpoint topic before any other topic.

    Returns "created", "exists" or "missing" (only without `create`).
    """
    topic = settings.checkpoint_topic
    try:
        if not create:
            if not topic_exists(admin, topic):
                return "missing"
            check_compacted(admin, topic)
            return "exists"
        created = ensure_compacted(
            admin, topic, replication_factor=settings.topic_replication_factor
        )
    except (TopicConfigError, KafkaException) as exc:
        raise _topic_error(settings, topic, exc) from exc
    return "created" if created else "exists"


def open_checkpoint_store(
    settings: Settings,
    producer: Producer | None = None,
    *,
    create: bool = True,
    admin: AdminClient | None = None,
) -> CheckpointStore:
    """Check the compacted checkpoint topic (creating it only with `create`) and read it.

    Read-only callers pass `create=False`: a missing topic then means "no checkpoints yet"
    and nothing is created.
    """
    if admin is None:
        admin = AdminClient(settings.kafka_config())
        check_kafka(settings, admin)
    state = prepare_checkpoint_topic(settings, admin, create=create)
    store = CheckpointStore(
        settings.kafka_config(),
        settings.checkpoint_topic,
        settings.producer_id,
        producer or new_producer(settings.kafka_config()),
    )
    if state == "exists":
        store.load()
    else:
        # Missing, or created empty a moment ago: nothing to read (and a topic this new may
        # not be in every broker's metadata yet).
        store.loaded = True
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
    deletes: DeleteStore | None = None
    """The deletes topic (no resurrection, delivery dedup); None when nothing can delete."""
    receiver: WebhookReceiver | None = None
    """Set when WEBHOOK_PORT is: `run` serves it (producer.webhooks.server)."""
    reconciler: Reconciler | None = None

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
    if settings.heartbeat_topic:  # one record per resource, the latest is what counts
        compact = {"cleanup.policy": "compact"}
        specs.append(TopicSpec(settings.heartbeat_topic, 1, replication, compact))
    if settings.deletes_enabled:  # latest per key; what is older than the retention goes
        retention_ms = int(settings.deletes_retention_days * 86_400_000)
        bounded = {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}
        specs.append(TopicSpec(settings.deletes_topic, 1, replication, bounded))
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


TRANSACTION_TIMEOUT_RANGE_S = (60.0, 900.0)
"""librdkafka's default is 60 s; brokers refuse more than transaction.max.timeout.ms (15 min
by default)."""


def transaction_timeout_s(settings: Settings) -> float:
    """Long enough for one batch with its slowest page (HTTP timeout plus retries): a
    transaction that times out is aborted by the broker. The trade-off: read_committed
    consumers wait for an open transaction, up to this long after a crash (less when the
    producer restarts: its `init_transactions` aborts what was left open)."""
    wanted = (
        settings.batch_seconds
        + settings.http_timeout_seconds
        + settings.max_retry_wait_seconds
        + 30.0
    )
    low, high = TRANSACTION_TIMEOUT_RANGE_S
    return min(max(wanted, low), high)


def open_sink(
    settings: Settings,
    admin: AdminClient,
    observer: DeliveryObserver,
    stop: threading.Event | None = None,
    *,
    lanes: bool = True,
) -> tuple[KafkaSink, CheckpointStore]:
    """Topics, producer, registered schemas and checkpoints: everything that writes to Kafka.
    `lanes=False`: no exactly-once lanes even with DELIVERY=exactly-once (a tool beside a
    running `run` must not initialise, and so fence, its transactional ids).

    Order matters: Kafka reachable, then the checkpoint topic (a wrong one stops start-up
    before any change topic is created), then the change and dead-letter topics."""
    check_kafka(settings, admin)
    checkpoint_state = prepare_checkpoint_topic(settings, admin, create=True)
    specs = topic_specs(settings)
    try:
        created = ensure_topics(admin, specs)
        targets, dead_letter_target = effective_targets(admin, settings, created)
    except KafkaException as exc:
        raise _topic_error(settings, ",".join(s.name for s in specs), exc) from exc
    largest = max(t.max_message_bytes for t in [*targets.values(), dead_letter_target])
    producer = new_producer(settings.kafka_config(), message_max_bytes=largest)
    lane_producer = None
    if settings.delivery == "exactly-once" and lanes:

        def lane_producer(resource: str) -> Producer:
            return new_transactional_producer(
                settings.kafka_config(),
                transactional_id=f"{settings.producer_id}.{resource}",
                message_max_bytes=largest,
                transaction_timeout_s=transaction_timeout_s(settings),
            )

    registry = SchemaRegistryClient(settings.registry_config())
    store = CheckpointStore(
        settings.kafka_config(), settings.checkpoint_topic, settings.producer_id, producer
    )
    if checkpoint_state == "created":
        store.loaded = True  # created empty a moment ago
    else:
        store.load()
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
        heartbeat_topic=settings.heartbeat_topic,
        lane_producer=lane_producer,
    )
    try:
        sink.register_schemas()
    # The registry client's transport errors come from its own HTTP library (whose module
    # differs between confluent-kafka releases); whatever registration raises at start-up
    # means the registry cannot be used. The traceback stays available at LOG_LEVEL=DEBUG.
    except Exception as exc:
        auth = settings.schema_registry_auth
        problem = registry_problem(exc, auth.get_secret_value() if auth else None)
        if problem is not None:
            raise StartupError(
                "schema registry", settings.schema_registry_url, str(problem), problem.check
            ) from exc
        raise StartupError(
            "schema registry",
            settings.schema_registry_url,
            f"cannot register the event schemas ({_reason(exc)})",
            "SCHEMA_REGISTRY_URL, that the registry runs and is reachable from here, and "
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        ) from exc
    if sink.exactly_once:
        try:
            sink.open_lanes(settings.resources)
        except KafkaException as exc:
            raise StartupError(
                "Kafka transactions",
                settings.bootstrap_servers,
                f"cannot initialise the exactly-once producers ({_reason(exc)})",
                "that the brokers support transactions (transaction.state.log.* settings) and "
                "this client's ACLs (WRITE and DESCRIBE on the transactional ids "
                f"{settings.producer_id}.*)",
            ) from exc
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
    health.add_check("kafka", _kafka_probe(admin, settings.bootstrap_servers))
    health.add_check("schema_registry", _registry_probe(registry, settings.schema_registry_url))
    health.set_check_result(
        "checkpoints_loaded",
        True,
        f"{len(store.all())} checkpoint(s), {store.corrupt_records} unreadable record(s)"
        + (
            f", unreadable latest: {','.join(sorted(store.corrupt_keys))}"
            if store.corrupt_keys
            else ""
        ),
    )

    def interruptible_sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise RunInterruptedError

    clients: dict[str, ApiClient] = {}
    # one request budget for every resource's client: a 429 slows them all down (issue 11)
    budget = RateBudget(
        settings.api_max_requests_per_second,
        settings.api_max_concurrent_requests,
        observer=metrics,
        stop=stop,
    )

    clients_lock = threading.Lock()

    def source_for(resource: str) -> Source:
        # the windows of a resumed sliced export ask at once: one client (and one connection
        # pool, closed by `App.close`) per resource, never a second one that nobody closes
        with clients_lock:
            if resource not in clients:
                clients[resource] = ApiClient(
                    credentials,
                    base_url=settings.api_url,
                    timeout_seconds=settings.http_timeout_seconds,
                    max_retry_wait_seconds=settings.max_retry_wait_seconds,
                    observer=metrics,
                    sleep=interruptible_sleep,
                    budget=budget,
                )
            client = clients[resource]
        # the next page is fetched while this one is built and produced (issue 11)
        source = ApiSource(client, resource, settings.page_size)
        return PrefetchingSource(source, stop=stop, name=f"prefetch-{resource}")

    deletes = open_deletes(settings, sink) if settings.deletes_enabled else None

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
        batch_pages=settings.batch_pages,
        batch_seconds=settings.batch_seconds,
        backfill_slices=settings.backfill_slices,
        stop=stop,
        deletes=deletes,
        liveness_stall_s=settings.liveness_stall_seconds,
        settle_s=settings.settle_seconds,
    )
    health.add_check("api", service.api_health)
    app = App(settings, service, sink, store, metrics, health, stop, clients, deletes)
    if deletes is not None:
        app.reconciler = new_reconciler(settings, app, source_for)
        if settings.webhook_port:
            app.receiver = WebhookReceiver(
                verifier=Verifier([s.get_secret_value() for s in settings.webhook_secrets]),
                sink=DirectSink(sink),
                deletes=deletes,
                observer=metrics,
                producer_id=settings.producer_id,
                resources=settings.resources,
                topic_for=settings.topic_for,
                realtime=settings.webhook_realtime,
                settle_us=round(settings.settle_seconds * 1_000_000),
            )
    return app


@dataclass(frozen=True)
class DirectSink:
    """The `Sink` port for deletes and realtime events: the shared producer, outside the
    exactly-once lanes (`KafkaSink.begin_direct`)."""

    sink: KafkaSink

    def begin(self, resource: str, run_id: str) -> KafkaRunSink:
        return self.sink.begin_direct(resource, run_id)


def open_deletes(settings: Settings, sink: KafkaSink) -> DeleteStore:
    """Read the deletes topic (created by `open_sink`) into memory."""
    store = DeleteStore(
        settings.kafka_config(),
        settings.deletes_topic,
        settings.producer_id,
        sink.producer,
        settings.deletes_retention_days,
    )
    for attempt in range(10):  # a topic created a moment ago may have no leader yet
        try:
            kept = store.load()
            break
        except (TopicReadError, KafkaException):
            if attempt == 9:
                raise
            time.sleep(0.5)
    log.info(
        "%d deleted id(s) known from %s", kept, settings.deletes_topic, extra={"deleted": kept}
    )
    return store


def new_reconciler(settings: Settings, app: App, source_for: Callable[[str], Source]) -> Reconciler:
    assert app.deletes is not None
    deserializer = AvroDeserializer(app.sink.registry)

    def scan(topic: str) -> Iterator[tuple[str, bytes | None]]:
        for msg in scan_to_end(settings.kafka_config(), topic):
            yield (msg.key() or b"").decode("utf-8", "replace"), msg.value()

    def decode(topic: str, value: bytes) -> Mapping[str, Any]:
        event = deserializer(value, SerializationContext(topic, MessageField.VALUE))
        return event if isinstance(event, dict) else {}

    return Reconciler(
        source_for=source_for,
        scan=scan,
        decode=decode,
        sink=DirectSink(app.sink),
        deletes=app.deletes,
        observer=app.metrics,
        run_lock=app.service.run_lock,
        topic_for=settings.topic_for,
        producer_id=settings.producer_id,
        listings=ListingStore(
            settings.kafka_config(),
            settings.checkpoint_topic,
            settings.producer_id,
            app.sink.producer,
        ),
    )


def new_health(settings: Settings) -> HealthState:
    return HealthState(
        liveness_timeout_s=default_liveness_timeout(settings.poll_interval_seconds),
        stall_timeout_s=settings.liveness_stall_seconds,
    )


def _kafka_probe(admin: AdminClient, address: str) -> Callable[[], tuple[bool, str]]:
    def probe() -> tuple[bool, str]:
        try:
            metadata = admin.list_topics(timeout=PROBE_TIMEOUT_S)
        except KafkaException as exc:
            return False, f"Kafka at {address}: {_reason(exc)}"
        finally:
            # An AdminClient hands librdkafka's log lines to the `logger` only in poll().
            admin.poll(0)
        return True, f"{len(metadata.brokers)} broker(s) at {address}"

    return probe


def _registry_probe(registry: SchemaRegistryClient, url: str) -> Callable[[], tuple[bool, str]]:
    def probe() -> tuple[bool, str]:
        try:
            subjects = registry.get_subjects()
        # whatever the registry client raises (its HTTP library varies by release)
        except Exception as exc:
            return False, f"schema registry at {url}: {_reason(exc)}"
        return True, f"{len(subjects)} subject(s) at {url}"

    return probe

"""Settings: one table of every option, read from environment variables and matching flags.

`SETTINGS` is the single configuration reference: the CLI builds its flags from it and
`markdown_table()` renders the README's reference from it (a test compares the two). Values are
validated by a typed pydantic model (`_Model`); every error names the variable. Secrets are
wrapped in `Secret` and registered with the log redactor as soon as they are read.

`KAFKA_<PROPERTY>` variables pass librdkafka properties through. Only properties librdkafka
itself knows are passed: a container also gets `KAFKA_HOME`, `KAFKA_HEAP_OPTS` or Kubernetes'
service links (`KAFKA_PORT=tcp://...`), which must never stop the producer from starting.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from confluent_kafka import KafkaException, Producer
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from producer.api import Credentials, Secret
from producer.api.errors import ApiConfigError
from producer.api.retry import RetryPolicy
from producer.observability.logging import librdkafka_logger, register_secret
from producer.schemas import RESOURCES

log = logging.getLogger(__name__)

KAFKA_PROPERTY_PREFIX = "KAFKA_"
DEAD_LETTER_POLICIES = ("dead-letter", "fail")


class ConfigError(ValueError):
    """Invalid configuration; the message names the variable (exit status 2)."""


@dataclass(frozen=True)
class Option:
    env: str
    default: str | None
    help: str
    secret: bool = False
    empty_ok: bool = False
    """An empty value means something (no prefix, derived, off); otherwise it is an error."""
    doc_default: str | None = None
    """The README's default column when the default is not a literal value."""

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")

    @property
    def dest(self) -> str:
        return self.env.lower()

    @property
    def shown_default(self) -> str:
        if self.secret:
            return "(secret)"
        if self.doc_default is not None:
            return self.doc_default
        return f"`{self.default}`"


SETTINGS: tuple[Option, ...] = (
    Option("ASKELEPHANT_API_URL", "https://app.askelephant.ai/api", "API base URL"),
    Option(
        "ASKELEPHANT_API_KEY",
        None,
        "API key `sk-apik_<id>.<secret>`, sent as the raw Authorization value",
        secret=True,
        empty_ok=True,
    ),
    Option(
        "ASKELEPHANT_ACCESS_TOKEN",
        None,
        "OAuth access token, sent as `Bearer`",
        secret=True,
        empty_ok=True,
    ),
    Option("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "Kafka bootstrap servers"),
    Option("SCHEMA_REGISTRY_URL", "http://localhost:8081", "Confluent-compatible registry URL"),
    Option(
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        None,
        "registry basic auth as `user:password`",
        secret=True,
        empty_ok=True,
    ),
    Option(
        "SCHEMA_REGISTRY_SSL_CA_LOCATION",
        None,
        "CA certificate file (PEM) or directory that verifies an https registry "
        "(unset: the system's CAs)",
        empty_ok=True,
        doc_default="(unset)",
    ),
    Option(
        "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION",
        None,
        "client certificate (PEM) for a registry that asks for one",
        empty_ok=True,
        doc_default="(unset)",
    ),
    Option(
        "SCHEMA_REGISTRY_SSL_KEY_LOCATION",
        None,
        "private key (PEM) of SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION",
        empty_ok=True,
        doc_default="(unset)",
    ),
    Option("TOPIC_PREFIX", "askelephant.", "prefix of the per-resource topics", empty_ok=True),
    Option(
        "CHECKPOINT_TOPIC",
        "askelephant.checkpoints",
        "checkpoint topic (`cleanup.policy=compact` only)",
    ),
    Option("RESOURCES", ",".join(RESOURCES), "comma-separated resources to sync"),
    Option("POLL_INTERVAL_SECONDS", "60", "seconds between the starts of two runs"),
    Option("PAGE_SIZE", "100", "records per page (whole number, 1..100)"),
    Option("PRODUCER_ID", "askelephant-kafka", "names this producer in checkpoint keys"),
    Option("TOPIC_PARTITIONS", "-1", "partitions of created topics (-1: broker default)"),
    Option("TOPIC_REPLICATION_FACTOR", "-1", "replication of created topics (-1: broker default)"),
    Option("HTTP_TIMEOUT_SECONDS", "30", "timeout of each API request"),
    Option("MAX_RETRY_WAIT_SECONDS", "300", "total backoff budget of one API request"),
    Option(
        "API_MAX_REQUESTS_PER_SECOND",
        "10",
        "API requests per second shared by all resources of the process; halved on each 429, "
        "then regained (0: no cap)",
    ),
    Option(
        "API_MAX_CONCURRENT_REQUESTS",
        "4",
        "API requests in flight at once, all resources of the process together",
    ),
    Option("METRICS_PORT", "9108", "port of /metrics, /healthz and /readyz (0: off)"),
    Option("LOG_FORMAT", "auto", "auto (json unless a terminal), json or text"),
    Option("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Option(
        "DEAD_LETTER_TOPIC",
        "",
        "topic of records that cannot become change events",
        empty_ok=True,
        doc_default="`<TOPIC_PREFIX>dlq`",
    ),
    Option(
        "DEAD_LETTER_POLICY",
        "dead-letter",
        "`dead-letter` (the run goes on) or `fail` (a bad record fails the run and stops the "
        "resource there)",
    ),
    Option(
        "MAX_MESSAGE_BYTES",
        "2097152",
        "largest change event in bytes, also `max.message.bytes` of the change topics the "
        "producer creates; a default plus per-resource overrides: `2097152,engagements=8388608`",
    ),
    Option(
        "DEAD_LETTER_MAX_MESSAGE_BYTES",
        "16777216",
        "largest dead letter in bytes, also `max.message.bytes` of the dead-letter topic",
    ),
    Option(
        "SETTLE_SECONDS",
        "10",
        "no checkpoint passes the API's clock at run start less this: a write that becomes "
        "visible to the list endpoint up to this long after its updated_at is still synced "
        "(costs a re-read of this window per run, not latency)",
    ),
    Option(
        "LIVENESS_STALL_SECONDS",
        "900",
        "/healthz fails when a sync worker made no progress for this long (must exceed "
        "HTTP_TIMEOUT_SECONDS; keep it above 10 x HTTP_TIMEOUT_SECONDS + MAX_RETRY_WAIT_SECONDS, "
        "one page's worst case)",
    ),
    Option(
        "DELIVERY",
        "at-least-once",
        "`at-least-once`, or `exactly-once`: a transactional producer per resource, each "
        "batch of pages one transaction (consumers read with isolation.level=read_committed)",
    ),
    Option(
        "BATCH_PAGES",
        "1000",
        "at most this many pages per progress mark (and per transaction in exactly-once "
        "mode); at full speed BATCH_SECONDS comes first",
    ),
    Option(
        "BATCH_SECONDS",
        "10",
        "at most this many seconds per progress mark / transaction (whichever comes first)",
    ),
    Option(
        "BACKFILL_SLICES",
        "1",
        "a first export (no checkpoint) is traversed by this many workers side by side, over "
        "4 `updated_at` windows each (1: one traversal)",
    ),
    Option(
        "HEARTBEAT_TOPIC",
        "",
        "compacted topic that gets, after each successful run, the instant up to which the "
        "resource is complete in Kafka (empty: off)",
        empty_ok=True,
        doc_default="(off)",
    ),
    Option(
        "WEBHOOK_PORT",
        "0",
        "port of the webhook receiver `POST /webhooks/askelephant` in `run` (0: off); needs "
        "ASKELEPHANT_WEBHOOK_SECRET",
    ),
    Option(
        "ASKELEPHANT_WEBHOOK_SECRET",
        None,
        "Svix endpoint signing secret `whsec_...`; several, comma-separated, during a rotation",
        secret=True,
        empty_ok=True,
    ),
    Option(
        "WEBHOOK_REALTIME",
        "false",
        "also publish `*.created`/`*.updated` deliveries at once as c/u events (polling stays "
        "the complete path; the same version has the same event_id)",
    ),
    Option(
        "DELETES_TOPIC",
        "",
        "compacted topic of deleted ids and handled webhook deliveries (no resurrection, "
        "replay dedup)",
        empty_ok=True,
        doc_default="`<TOPIC_PREFIX>deletes`",
    ),
    Option(
        "DELETES_RETENTION_DAYS",
        "7",
        "how long a delete and a delivery id are remembered (memory and `retention.ms` of "
        "DELETES_TOPIC)",
    ),
    Option(
        "RECONCILE_INTERVAL_SECONDS",
        "0",
        "seconds between reconciliations that find deleted ids by listing every id (0: off); "
        "a default plus per-resource overrides: `0,users=3600`",
    ),
)
OPTION_NAMES = frozenset(o.env for o in SETTINGS)
_BY_ENV = {o.env: o for o in SETTINGS}

KAFKA_PROPERTY_ROW = (
    "| `KAFKA_<PROPERTY>` | — | — | any librdkafka property, dots as underscores: "
    "`KAFKA_SECURITY_PROTOCOL=SASL_SSL`, `KAFKA_SASL_MECHANISM=SCRAM-SHA-512`, "
    "`KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD` (values of properties named like "
    "password/secret/key/token are redacted); a `KAFKA_*` variable that is not a librdkafka "
    "property (`KAFKA_HOME`, `KAFKA_PORT=tcp://...`) is ignored with a warning naming it |"
)


def markdown_table() -> str:
    """The README's configuration reference, generated from `SETTINGS`."""
    rows = [
        "| variable | flag | default | meaning |",
        "|---|---|---|---|",
        *(f"| `{o.env}` | `{o.flag}` | {o.shown_default} | {o.help} |" for o in SETTINGS),
        KAFKA_PROPERTY_ROW,
    ]
    return "\n".join(rows)


# ------------------------------------------------------------------------- typed model


def _between(low: float, high: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return check


def _matches(pattern: str, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(what)
        return value

    return check


def _not_zero(value: int) -> int:
    if value == 0:
        raise ValueError("must not be 0 (use -1 for the broker default)")
    return value


def _resources(value: Any) -> tuple[str, ...]:
    names = tuple(r.strip() for r in value.split(",") if r.strip())
    unknown = sorted(set(names) - set(RESOURCES))
    if unknown or not names:
        raise ValueError(f"has unknown resource(s) {unknown}; choose from {', '.join(RESOURCES)}")
    return names


_URL = r"(https?|mock)://[^\s]+"
_TOPIC = r"[A-Za-z0-9._-]+"
MESSAGE_BYTES_RANGE = (1_000, 1_000_000_000)
"""librdkafka's `message.max.bytes` range (the upper bound), and a floor no event fits under."""

Url = Annotated[str, AfterValidator(_matches(_URL, "must be an http(s) URL"))]
Topic = Annotated[
    str, AfterValidator(_matches(_TOPIC, "may only hold letters, digits, '.', '_' and '-'"))
]
OptionalTopic = Annotated[
    str,
    AfterValidator(_matches(r"[A-Za-z0-9._-]*", "may only hold letters, digits, '.', '_' and '-'")),
]
MessageBytes = Annotated[int, AfterValidator(_between(*MESSAGE_BYTES_RANGE))]


@dataclass(frozen=True)
class MessageBytesLimits:
    """`MAX_MESSAGE_BYTES`: a default plus per-resource overrides."""

    default: int
    overrides: Mapping[str, int] = field(default_factory=dict)

    def for_resource(self, resource: str) -> int:
        return self.overrides.get(resource, self.default)


def _whole(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} must be a whole number of bytes") from None


def _message_bytes(value: Any) -> MessageBytesLimits:
    if isinstance(value, MessageBytesLimits):
        return value
    default: int | None = None
    overrides: dict[str, int] = {}
    low, high = MESSAGE_BYTES_RANGE
    for item in (part.strip() for part in value.split(",")):
        if not item:
            raise ValueError("has an empty item (expected `N` or `resource=N`, comma-separated)")
        name, sep, number = item.partition("=")
        if not sep:
            if default is not None:
                raise ValueError("has two defaults (only one bare number is allowed)")
            default = _whole(item, "the default")
            amount, label = default, "the default"
        else:
            name = name.strip()
            if name not in RESOURCES:
                raise ValueError(f"names unknown resource {name!r}; choose from {RESOURCES}")
            if name in overrides:
                raise ValueError(f"sets {name} twice")
            amount = overrides[name] = _whole(number.strip(), name)
            label = name
        if not low <= amount <= high:
            raise ValueError(f"{label} must be between {low} and {high} bytes")
    return MessageBytesLimits(
        default=int(_BY_ENV["MAX_MESSAGE_BYTES"].default or 0) if default is None else default,
        overrides=overrides,
    )


@dataclass(frozen=True)
class ReconcileIntervals:
    """`RECONCILE_INTERVAL_SECONDS`: a default plus per-resource overrides (0: off)."""

    default: float = 0.0
    overrides: Mapping[str, float] = field(default_factory=dict)

    def for_resource(self, resource: str) -> float:
        return self.overrides.get(resource, self.default)


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number of seconds") from None
    if not (value == 0 or 1 <= value <= 30 * 86_400):
        raise ValueError(f"{what} must be 0 (off) or between 1 and 2592000 seconds")
    return value


def _intervals(value: Any) -> ReconcileIntervals:
    if isinstance(value, ReconcileIntervals):
        return value
    default = 0.0
    overrides: dict[str, float] = {}
    for item in (part.strip() for part in str(value).split(",")):
        name, sep, number = item.partition("=")
        if not sep:
            default = _seconds(item, "the default")
            continue
        name = name.strip()
        if name not in RESOURCES:
            raise ValueError(f"names unknown resource {name!r}; choose from {RESOURCES}")
        overrides[name] = _seconds(number.strip(), name)
    return ReconcileIntervals(default, overrides)


def _field(env: str, **kw: Any) -> Any:
    return Field(alias=env, **kw)


class _Model(BaseModel):
    """Typed, validated view of the raw strings; aliases are the variable names."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    api_url: Url = _field("ASKELEPHANT_API_URL")
    api_key: str | None = _field("ASKELEPHANT_API_KEY", default=None)
    access_token: str | None = _field("ASKELEPHANT_ACCESS_TOKEN", default=None)
    bootstrap_servers: str = _field("KAFKA_BOOTSTRAP_SERVERS")
    schema_registry_url: Url = _field("SCHEMA_REGISTRY_URL")
    schema_registry_auth: str | None = _field("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", default=None)
    schema_registry_ca: str | None = _field("SCHEMA_REGISTRY_SSL_CA_LOCATION", default=None)
    schema_registry_cert: str | None = _field(
        "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION", default=None
    )
    schema_registry_key: str | None = _field("SCHEMA_REGISTRY_SSL_KEY_LOCATION", default=None)
    topic_prefix: OptionalTopic = _field("TOPIC_PREFIX", default="")
    checkpoint_topic: Topic = _field("CHECKPOINT_TOPIC")
    resources: Annotated[tuple[str, ...], BeforeValidator(_resources)] = _field("RESOURCES")
    poll_interval_seconds: Annotated[float, AfterValidator(_between(1, 86_400))] = _field(
        "POLL_INTERVAL_SECONDS"
    )
    page_size: Annotated[int, AfterValidator(_between(1, 100))] = _field("PAGE_SIZE")
    producer_id: Topic = _field("PRODUCER_ID")
    topic_partitions: Annotated[
        int, AfterValidator(_between(-1, 10_000)), AfterValidator(_not_zero)
    ] = _field("TOPIC_PARTITIONS")
    topic_replication_factor: Annotated[
        int, AfterValidator(_between(-1, 100)), AfterValidator(_not_zero)
    ] = _field("TOPIC_REPLICATION_FACTOR")
    http_timeout_seconds: Annotated[float, AfterValidator(_between(0.1, 600))] = _field(
        "HTTP_TIMEOUT_SECONDS"
    )
    max_retry_wait_seconds: Annotated[float, AfterValidator(_between(0, 86_400))] = _field(
        "MAX_RETRY_WAIT_SECONDS"
    )
    api_max_requests_per_second: Annotated[float, AfterValidator(_between(0, 10_000))] = _field(
        "API_MAX_REQUESTS_PER_SECOND"
    )
    api_max_concurrent_requests: Annotated[int, AfterValidator(_between(1, 256))] = _field(
        "API_MAX_CONCURRENT_REQUESTS"
    )
    metrics_port: Annotated[int, AfterValidator(_between(0, 65_535))] = _field("METRICS_PORT")
    log_format: Literal["auto", "json", "text"] = _field("LOG_FORMAT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _field("LOG_LEVEL")
    dead_letter_topic: OptionalTopic = _field("DEAD_LETTER_TOPIC", default="")
    dead_letter_policy: Literal["dead-letter", "fail"] = _field("DEAD_LETTER_POLICY")
    max_message_bytes: Annotated[MessageBytesLimits, BeforeValidator(_message_bytes)] = _field(
        "MAX_MESSAGE_BYTES"
    )
    dead_letter_max_message_bytes: MessageBytes = _field("DEAD_LETTER_MAX_MESSAGE_BYTES")
    liveness_stall_seconds: Annotated[float, AfterValidator(_between(1, 7 * 86_400))] = _field(
        "LIVENESS_STALL_SECONDS"
    )
    settle_seconds: Annotated[float, AfterValidator(_between(1, 3600))] = _field("SETTLE_SECONDS")
    heartbeat_topic: OptionalTopic = _field("HEARTBEAT_TOPIC", default="")
    webhook_port: Annotated[int, AfterValidator(_between(0, 65_535))] = _field("WEBHOOK_PORT")
    webhook_secret: str | None = _field("ASKELEPHANT_WEBHOOK_SECRET", default=None)
    webhook_realtime: bool = _field("WEBHOOK_REALTIME")
    deletes_topic: OptionalTopic = _field("DELETES_TOPIC", default="")
    deletes_retention_days: Annotated[float, AfterValidator(_between(0.01, 3650))] = _field(
        "DELETES_RETENTION_DAYS"
    )
    reconcile_interval: Annotated[ReconcileIntervals, BeforeValidator(_intervals)] = _field(
        "RECONCILE_INTERVAL_SECONDS"
    )
    delivery: Literal["at-least-once", "exactly-once"] = _field("DELIVERY")
    batch_pages: Annotated[int, AfterValidator(_between(1, 100_000))] = _field("BATCH_PAGES")
    batch_seconds: Annotated[float, AfterValidator(_between(0.1, 3_600))] = _field("BATCH_SECONDS")
    backfill_slices: Annotated[int, AfterValidator(_between(1, 64))] = _field("BACKFILL_SLICES")


_NUMBER_ERRORS = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_type": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
}


def _explain(error: Mapping[str, Any]) -> str:
    env = str(error["loc"][0]) if error.get("loc") else "configuration"
    option = _BY_ENV.get(env)
    shown = "(value not shown)" if option is None or option.secret else repr(error.get("input"))
    kind = error["type"]
    if kind in _NUMBER_ERRORS:
        text = _NUMBER_ERRORS[kind]
    elif kind == "value_error":
        text = str(error.get("ctx", {}).get("error", error["msg"]))
    elif kind == "literal_error":
        text = f"must be {error.get('ctx', {}).get('expected', '')}"
    else:
        text = str(error["msg"])
    return f"{env} {text}, got {shown}"


# -------------------------------------------------------------------------- Settings


@dataclass(frozen=True)
class Settings:
    api_url: str
    credentials: Credentials | None
    bootstrap_servers: str
    schema_registry_url: str
    schema_registry_auth: Secret | None
    topic_prefix: str
    checkpoint_topic: str
    resources: tuple[str, ...]
    poll_interval_seconds: float
    page_size: int
    producer_id: str
    topic_partitions: int
    topic_replication_factor: int
    http_timeout_seconds: float
    max_retry_wait_seconds: float
    metrics_port: int
    log_format: str
    log_level: str
    kafka_properties: Mapping[str, str] = field(default_factory=dict)
    """Extra librdkafka properties from `KAFKA_<PROPERTY>` variables (values may be secret)."""
    dead_letter_topic: str = "askelephant.dlq"
    """`DEAD_LETTER_TOPIC`, or `<TOPIC_PREFIX>dlq` when it is not set."""
    dead_letter_policy: Literal["dead-letter", "fail"] = "dead-letter"
    max_message_bytes: MessageBytesLimits = field(
        default_factory=lambda: MessageBytesLimits(2_097_152)
    )
    dead_letter_max_message_bytes: int = 16_777_216
    liveness_stall_seconds: float = 900.0
    settle_seconds: float = 10.0
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"
    batch_pages: int = 10
    batch_seconds: float = 10.0
    backfill_slices: int = 1
    heartbeat_topic: str | None = None
    """None: heartbeats are off."""
    webhook_port: int = 0
    """0: no webhook receiver."""
    webhook_secrets: tuple[Secret, ...] = ()
    webhook_realtime: bool = False
    deletes_topic: str = "askelephant.deletes"
    deletes_retention_days: float = 7.0
    reconcile_interval: ReconcileIntervals = field(default_factory=ReconcileIntervals)
    ignored_kafka_variables: tuple[str, ...] = ()
    """`KAFKA_*` variables that are not librdkafka properties (names only)."""
    api_max_requests_per_second: float = 10.0
    """Shared by every API client of the process (`producer.api.budget`); 0: no rate cap."""
    api_max_concurrent_requests: int = 4
    schema_registry_tls: Mapping[str, str] = field(default_factory=dict)
    """The registry client's `ssl.*` properties (CA, client certificate and key files)."""

    def topic_for(self, resource: str) -> str:
        return f"{self.topic_prefix}{resource}"

    @property
    def deletes_enabled(self) -> bool:
        """The receiver or reconciliation can delete: the deletes topic is used."""
        return bool(self.webhook_port) or any(
            self.reconcile_interval.for_resource(r) > 0 for r in self.resources
        )

    def max_message_bytes_for(self, resource: str) -> int:
        """`MAX_MESSAGE_BYTES` for `resource`: its override, else the default."""
        return self.max_message_bytes.for_resource(resource)

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every client, with its logs routed to Python logging.

        `logger` sends librdkafka's own log lines through `producer.librdkafka` (structured,
        rate-limited); without it librdkafka writes raw lines to stderr. Pass the whole dict to
        `Producer`, `Consumer` or `AdminClient`. Logs are delivered by the client's `poll()`
        or `flush()`.
        """
        return {
            **self.kafka_properties,
            "bootstrap.servers": self.bootstrap_servers,
            "logger": librdkafka_logger(),
        }

    def registry_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"url": self.schema_registry_url, **self.schema_registry_tls}
        if self.schema_registry_auth:
            conf["basic.auth.user.info"] = self.schema_registry_auth.get_secret_value()
        return conf

    def require_credentials(self) -> Credentials:
        if self.credentials is None:
            raise ConfigError(
                "no API credential: set ASKELEPHANT_API_KEY (or ASKELEPHANT_ACCESS_TOKEN)"
            )
        return self.credentials

    def warn_ignored(self) -> None:
        """Log (WARNING) the `KAFKA_*` variables that were ignored; names only, never values."""
        if self.ignored_kafka_variables:
            log.warning(
                "ignoring KAFKA_* variable(s) that are not librdkafka properties: %s",
                ", ".join(self.ignored_kafka_variables),
                extra={"ignored_variables": list(self.ignored_kafka_variables)},
            )


def _registry_tls(model: _Model) -> dict[str, str]:
    """The registry's TLS files, checked here: a wrong path would otherwise surface as a
    handshake failure at the first schema registration."""
    files = {
        "ssl.ca.location": ("SCHEMA_REGISTRY_SSL_CA_LOCATION", model.schema_registry_ca),
        "ssl.certificate.location": (
            "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION",
            model.schema_registry_cert,
        ),
        "ssl.key.location": ("SCHEMA_REGISTRY_SSL_KEY_LOCATION", model.schema_registry_key),
    }
    conf: dict[str, str] = {}
    for prop, (env, value) in files.items():
        if value is None:
            continue
        if not os.path.exists(value):
            raise ConfigError(f"{env}={value}: no such file or directory")
        conf[prop] = value
    if "ssl.key.location" in conf and "ssl.certificate.location" not in conf:
        raise ConfigError(
            "SCHEMA_REGISTRY_SSL_KEY_LOCATION is set but SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION "
            "is not"
        )
    return conf


def add_flags(parser: argparse.ArgumentParser, only: frozenset[str] | None = None) -> None:
    """A flag per setting, or per setting named in `only` (the others still come from the
    environment)."""
    group = parser.add_argument_group("configuration (flags override environment variables)")
    for option in SETTINGS:
        if only is not None and option.env not in only:
            continue
        shown = "(secret)" if option.secret else f"default: {option.default or '(empty)'}"
        if option.doc_default is not None:  # derived from another setting, or off
            shown = f"default: {option.doc_default.strip('`')}"
        group.add_argument(
            option.flag,
            dest=option.dest,
            default=None,
            metavar=option.env,
            help=f"{option.help} [{shown}]",
        )


# ----------------------------------------------------------------- KAFKA_* properties

_SECRET_WORDS = ("password", "secret", "token", "key")


@functools.lru_cache(maxsize=256)
def _probe_property(prop: str, value: str) -> Literal["known", "unknown", "invalid"]:
    """Ask librdkafka itself whether it knows `prop` (and accepts `value`).

    Setting a property on a client config is how librdkafka validates it; a throwaway,
    unconnected producer (no bootstrap servers, logs discarded) is cheap. Only the two
    set-time errors are decisive; any other construction error (e.g. SASL mechanism support)
    depends on the whole configuration and is left to the real client.
    """
    try:
        Producer({prop: value, "logger": _DISCARD})
    except KafkaException as exc:
        text = exc.args[0].str() if exc.args else str(exc)
        if text.startswith("No such configuration property"):
            return "unknown"
        if text.startswith("Invalid value"):
            return "invalid"
    return "known"


class _Discard:
    def log(self, *_args: Any) -> None:
        """Drops the probe's own log lines (the probe is not a client anyone uses)."""


_DISCARD = _Discard()


def _kafka_properties(environ: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    props: dict[str, str] = {}
    ignored: list[str] = []
    for name, value in sorted(environ.items()):
        if not name.startswith(KAFKA_PROPERTY_PREFIX) or name in OPTION_NAMES:
            continue
        prop = name[len(KAFKA_PROPERTY_PREFIX) :].lower().replace("_", ".")
        secret = any(word in prop for word in _SECRET_WORDS)
        if secret:
            register_secret(value)
        outcome = _probe_property(prop, value) if re.fullmatch(r"[a-z0-9.]+", prop) else "unknown"
        if outcome == "unknown":
            ignored.append(name)
        elif outcome == "invalid":
            raise ConfigError(
                f"{name}: librdkafka refuses this value for {prop!r}"
                + (" (value not shown)" if secret else f", got {value!r}")
            )
        else:
            if _missing_file(prop, value):
                # librdkafka would refuse to create the client with a bare traceback
                raise ConfigError(
                    f"{name}" + ("" if secret else f"={value}") + ": no such file or directory"
                )
            props[prop] = value
    return props, tuple(ignored)


def _missing_file(prop: str, value: str) -> bool:
    """A `*.location` property (CA, certificate, key, ...) naming a path that does not exist
    (`ssl.ca.location=probe` asks librdkafka to find the system's CAs)."""
    if not prop.endswith(".location") or (prop == "ssl.ca.location" and value == "probe"):
        return False
    return not os.path.exists(value)


# ---------------------------------------------------------------------------- loading


def worst_page_seconds(http_timeout_s: float, max_retry_wait_s: float) -> float:
    """The longest one page can take: every attempt times out, and the retries wait their
    whole budget (producer/api/retry.py)."""
    return RetryPolicy().max_attempts * http_timeout_s + max_retry_wait_s


def load_settings(
    environ: Mapping[str, str] | None = None, flags: argparse.Namespace | None = None
) -> Settings:
    """Read and validate every option; raise `ConfigError` naming the offending variable."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    for option in SETTINGS:
        value = getattr(flags, option.dest, None) if flags is not None else None
        given = f" (flag {option.flag})" if value is not None else ""
        if value is None:
            value = environ.get(option.env)
        if value is None:
            if option.default is not None:
                raw[option.env] = option.default
            continue
        value = value.strip()
        if value == "":
            if option.empty_ok:
                continue
            # An empty variable is a deployment mistake (a missing secret or value), not a
            # request for the default; silently using the default would hide it.
            raise ConfigError(
                f"{option.env} is set but empty{given}; give a value or unset it "
                f"for the default ({option.default})"
            )
        raw[option.env] = value
        if option.secret:
            register_secret(value)
    for name in ("LOG_FORMAT",):
        raw[name] = raw[name].lower()
    for name in ("LOG_LEVEL",):
        raw[name] = raw[name].upper()

    try:
        model = _Model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("; ".join(_explain(e) for e in exc.errors())) from None

    try:
        credentials: Credentials | None = Credentials.from_values(
            api_key=model.api_key, access_token=model.access_token
        )
    except ApiConfigError as exc:
        if model.api_key or model.access_token:
            raise ConfigError(f"ASKELEPHANT_API_KEY / ASKELEPHANT_ACCESS_TOKEN: {exc}") from None
        credentials = None  # commands that call the API use require_credentials()

    if model.liveness_stall_seconds <= model.http_timeout_seconds:
        # one request may take HTTP_TIMEOUT_SECONDS: a worker waiting on a healthy but slow
        # API would be killed (issue 17, failure 11)
        raise ConfigError(
            f"LIVENESS_STALL_SECONDS ({model.liveness_stall_seconds:g}) must exceed "
            f"HTTP_TIMEOUT_SECONDS ({model.http_timeout_seconds:g}); one page's worst case is "
            f"{worst_page_seconds(model.http_timeout_seconds, model.max_retry_wait_seconds):g}s"
        )
    secrets = tuple(Secret(p.strip()) for p in (model.webhook_secret or "").split(",") if p.strip())
    for secret in secrets:  # each one alone must be redacted too
        register_secret(secret.get_secret_value())
    if model.webhook_port and not secrets:
        raise ConfigError("WEBHOOK_PORT is set but ASKELEPHANT_WEBHOOK_SECRET is not")
    if any(not s.get_secret_value().startswith("whsec_") for s in secrets):
        raise ConfigError("ASKELEPHANT_WEBHOOK_SECRET: each secret must start with whsec_")

    kafka_properties, ignored = _kafka_properties(environ)
    return Settings(
        schema_registry_tls=_registry_tls(model),
        api_url=model.api_url,
        credentials=credentials,
        bootstrap_servers=model.bootstrap_servers,
        schema_registry_url=model.schema_registry_url,
        schema_registry_auth=Secret(model.schema_registry_auth)
        if model.schema_registry_auth
        else None,
        topic_prefix=model.topic_prefix,
        checkpoint_topic=model.checkpoint_topic,
        resources=model.resources,
        poll_interval_seconds=model.poll_interval_seconds,
        page_size=model.page_size,
        producer_id=model.producer_id,
        topic_partitions=model.topic_partitions,
        topic_replication_factor=model.topic_replication_factor,
        http_timeout_seconds=model.http_timeout_seconds,
        max_retry_wait_seconds=model.max_retry_wait_seconds,
        metrics_port=model.metrics_port,
        log_format=model.log_format,
        log_level=model.log_level,
        kafka_properties=kafka_properties,
        dead_letter_topic=model.dead_letter_topic or f"{model.topic_prefix}dlq",
        dead_letter_policy=model.dead_letter_policy,
        max_message_bytes=model.max_message_bytes,
        dead_letter_max_message_bytes=model.dead_letter_max_message_bytes,
        liveness_stall_seconds=model.liveness_stall_seconds,
        settle_seconds=model.settle_seconds,
        delivery=model.delivery,
        batch_pages=model.batch_pages,
        batch_seconds=model.batch_seconds,
        backfill_slices=model.backfill_slices,
        heartbeat_topic=model.heartbeat_topic or None,
        webhook_port=model.webhook_port,
        webhook_secrets=secrets,
        webhook_realtime=model.webhook_realtime,
        deletes_topic=model.deletes_topic or f"{model.topic_prefix}deletes",
        deletes_retention_days=model.deletes_retention_days,
        reconcile_interval=model.reconcile_interval,
        ignored_kafka_variables=ignored,
        api_max_requests_per_second=model.api_max_requests_per_second,
        api_max_concurrent_requests=model.api_max_concurrent_requests,
    )

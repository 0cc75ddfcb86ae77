"""Settings: one table of every option, read from environment variables and matching flags.

`SETTINGS` is the single configuration reference: the CLI builds its flags from it, the README
table and the deployment tests are checked against it. Secrets are wrapped in `Secret` and
registered with the log redactor as soon as they are read.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from producer.api import Credentials, Secret
from producer.api.errors import ApiConfigError
from producer.observability.logging import register_secret
from producer.schemas import RESOURCES

KAFKA_PROPERTY_PREFIX = "KAFKA_"


class ConfigError(ValueError):
    """Invalid configuration; the message names the variable (exit status 2)."""


@dataclass(frozen=True)
class Option:
    env: str
    default: str | None
    help: str
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.env.lower().replace("_", "-")

    @property
    def dest(self) -> str:
        return self.env.lower()


SETTINGS: tuple[Option, ...] = (
    Option("ASKELEPHANT_API_URL", "https://app.askelephant.ai/api", "API base URL"),
    Option(
        "ASKELEPHANT_API_KEY",
        None,
        "API key `sk-apik_<id>.<secret>`, sent as the raw Authorization value",
        secret=True,
    ),
    Option("ASKELEPHANT_ACCESS_TOKEN", None, "OAuth access token, sent as `Bearer`", secret=True),
    Option("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "Kafka bootstrap servers"),
    Option("SCHEMA_REGISTRY_URL", "http://localhost:8081", "Confluent-compatible registry URL"),
    Option(
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        None,
        "registry basic auth as `user:password`",
        secret=True,
    ),
    Option("TOPIC_PREFIX", "askelephant.", "prefix of the per-resource topics"),
    Option("CHECKPOINT_TOPIC", "askelephant.checkpoints", "compacted checkpoint topic"),
    Option("RESOURCES", ",".join(RESOURCES), "comma-separated resources to sync"),
    Option("POLL_INTERVAL_SECONDS", "60", "seconds between the starts of two runs"),
    Option("PAGE_SIZE", "100", "records per page (1..100)"),
    Option("PRODUCER_ID", "askelephant-kafka", "names this producer in checkpoint keys"),
    Option("TOPIC_PARTITIONS", "-1", "partitions of created topics (-1: broker default)"),
    Option("TOPIC_REPLICATION_FACTOR", "-1", "replication of created topics (-1: broker default)"),
    Option("HTTP_TIMEOUT_SECONDS", "30", "timeout of each API request"),
    Option("MAX_RETRY_WAIT_SECONDS", "300", "total backoff budget of one API request"),
    Option("METRICS_PORT", "9108", "port of /metrics, /healthz and /readyz (0: off)"),
    Option("LOG_FORMAT", "auto", "auto (json unless a terminal), json or text"),
    Option("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
)
OPTION_NAMES = frozenset(o.env for o in SETTINGS)


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

    def topic_for(self, resource: str) -> str:
        return f"{self.topic_prefix}{resource}"

    def kafka_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka settings shared by every client."""
        return {**self.kafka_properties, "bootstrap.servers": self.bootstrap_servers}

    def registry_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"url": self.schema_registry_url}
        if self.schema_registry_auth:
            conf["basic.auth.user.info"] = self.schema_registry_auth.get_secret_value()
        return conf

    def require_credentials(self) -> Credentials:
        if self.credentials is None:
            raise ConfigError(
                "no API credential: set ASKELEPHANT_API_KEY (or ASKELEPHANT_ACCESS_TOKEN)"
            )
        return self.credentials


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (flags override environment variables)")
    for option in SETTINGS:
        shown = "(secret)" if option.secret else f"default: {option.default}"
        group.add_argument(
            option.flag,
            dest=option.dest,
            default=None,
            metavar=option.env,
            help=f"{option.help} [{shown}]",
        )


def _kafka_properties(environ: Mapping[str, str]) -> dict[str, str]:
    props: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(KAFKA_PROPERTY_PREFIX) or name == "KAFKA_BOOTSTRAP_SERVERS":
            continue
        prop = name[len(KAFKA_PROPERTY_PREFIX) :].lower().replace("_", ".")
        if prop and re.fullmatch(r"[a-z0-9.]+", prop):
            props[prop] = value
            if any(word in prop for word in ("password", "secret", "token", "key")):
                register_secret(value)
    return props


def _number(
    raw: dict[str, str], env: str, cast: Callable[[str], Any], low: float, high: float
) -> Any:
    try:
        value = cast(raw[env])
    except ValueError:
        raise ConfigError(f"{env} must be a number, got {raw[env]!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{env} must be between {low:g} and {high:g}, got {value}")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None, flags: argparse.Namespace | None = None
) -> Settings:
    """Read and validate every option; raise `ConfigError` naming the offending variable."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    for option in SETTINGS:
        value = getattr(flags, option.dest, None) if flags is not None else None
        if value is None:
            value = environ.get(option.env, option.default)
        if value is not None and value.strip() != "":
            raw[option.env] = value.strip()
            if option.secret:
                register_secret(raw[option.env])

    try:
        credentials: Credentials | None = Credentials.from_values(
            api_key=raw.get("ASKELEPHANT_API_KEY"),
            access_token=raw.get("ASKELEPHANT_ACCESS_TOKEN"),
        )
    except ApiConfigError as exc:
        if "ASKELEPHANT_API_KEY" in raw or "ASKELEPHANT_ACCESS_TOKEN" in raw:
            raise ConfigError(f"ASKELEPHANT_API_KEY / ASKELEPHANT_ACCESS_TOKEN: {exc}") from None
        credentials = None  # commands that call the API use require_credentials()

    resources = tuple(r.strip() for r in raw["RESOURCES"].split(",") if r.strip())
    unknown = sorted(set(resources) - set(RESOURCES))
    if unknown or not resources:
        raise ConfigError(
            f"RESOURCES has unknown resource(s) {unknown}; choose from {', '.join(RESOURCES)}"
        )
    log_format = raw["LOG_FORMAT"].lower()
    if log_format not in ("auto", "json", "text"):
        raise ConfigError(f"LOG_FORMAT must be auto, json or text, got {log_format!r}")
    log_level = raw["LOG_LEVEL"].upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    for env in ("ASKELEPHANT_API_URL", "SCHEMA_REGISTRY_URL"):
        if not re.match(r"^(https?|mock)://[^\s]+$", raw[env]):
            raise ConfigError(f"{env} must be an http(s) URL, got {raw[env]!r}")
    for env in ("TOPIC_PREFIX", "CHECKPOINT_TOPIC", "PRODUCER_ID"):
        if env in raw and not re.fullmatch(r"[A-Za-z0-9._-]*", raw[env]):
            raise ConfigError(f"{env} may only hold letters, digits, '.', '_' and '-'")
    auth = raw.get("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO")
    partitions = _number(raw, "TOPIC_PARTITIONS", int, -1, 10_000)
    replication = _number(raw, "TOPIC_REPLICATION_FACTOR", int, -1, 100)
    if 0 in (partitions, replication):
        raise ConfigError("TOPIC_PARTITIONS and TOPIC_REPLICATION_FACTOR must not be 0")
    return Settings(
        api_url=raw["ASKELEPHANT_API_URL"],
        credentials=credentials,
        bootstrap_servers=raw["KAFKA_BOOTSTRAP_SERVERS"],
        schema_registry_url=raw["SCHEMA_REGISTRY_URL"],
        schema_registry_auth=Secret(auth) if auth else None,
        topic_prefix=raw.get("TOPIC_PREFIX", ""),
        checkpoint_topic=raw["CHECKPOINT_TOPIC"],
        resources=resources,
        poll_interval_seconds=_number(raw, "POLL_INTERVAL_SECONDS", float, 1, 86_400),
        page_size=_number(raw, "PAGE_SIZE", int, 1, 100),
        producer_id=raw["PRODUCER_ID"],
        topic_partitions=partitions,
        topic_replication_factor=replication,
        http_timeout_seconds=_number(raw, "HTTP_TIMEOUT_SECONDS", float, 0.1, 600),
        max_retry_wait_seconds=_number(raw, "MAX_RETRY_WAIT_SECONDS", float, 0, 86_400),
        metrics_port=_number(raw, "METRICS_PORT", int, 0, 65_535),
        log_format=log_format,
        log_level=log_level,
        kafka_properties=_kafka_properties(environ),
    )

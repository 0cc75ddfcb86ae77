"""Observability adapters: Prometheus metrics, health state, the HTTP endpoint, logging."""

from producer.observability.health import (
    CheckResult,
    HealthReport,
    HealthState,
    default_liveness_timeout,
)
from producer.observability.logging import (
    configure_logging,
    log_run,
    redact,
    redact_value,
    register_secret,
)
from producer.observability.metrics import (
    OUTCOMES,
    STATUS_CLASSES,
    ApiObserver,
    ProducerMetrics,
    parse_http_date,
    status_class_of,
)
from producer.observability.server import DEFAULT_PORT, ObservabilityServer

__all__ = [
    "DEFAULT_PORT",
    "OUTCOMES",
    "STATUS_CLASSES",
    "ApiObserver",
    "CheckResult",
    "HealthReport",
    "HealthState",
    "ObservabilityServer",
    "ProducerMetrics",
    "configure_logging",
    "default_liveness_timeout",
    "log_run",
    "parse_http_date",
    "redact",
    "redact_value",
    "register_secret",
    "status_class_of",
]

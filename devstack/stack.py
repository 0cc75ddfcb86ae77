"""One entry point for tests, the demo and benchmarks: a real Kafka broker + schema registry.

    with LocalStack() as stack:
        producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
        registry = SchemaRegistryClient({"url": stack.schema_registry_url})

See docs/devstack.md for how the broker and registry are obtained and the environment
variables that steer it.
"""

from __future__ import annotations

import logging
import os
import time
from types import TracebackType

from devstack._common import StackUnavailable, env_float
from devstack.kafka import RunningKafka, choose_backend, start_kafka
from devstack.registry import (
    ApicurioProcess,
    RunningRegistry,
    start_docker_registry,
    use_external_registry,
)

log = logging.getLogger("devstack")


class LocalStack:
    """Starts (or finds) a Kafka broker and a schema registry; stops what it started.

    Attributes once started: ``bootstrap_servers``, ``schema_registry_url``,
    ``kafka_version``, ``how`` (env | docker | maven: where the broker comes from),
    ``registry_how`` (env | docker | maven), ``registry_name`` and ``start_seconds``.
    """

    def __init__(self) -> None:
        self.kafka: RunningKafka | None = None
        self.registry: RunningRegistry | None = None
        self.start_seconds = 0.0

    # -- the public attributes

    @property
    def bootstrap_servers(self) -> str:
        return self._kafka().bootstrap_servers

    @property
    def schema_registry_url(self) -> str:
        return self._registry().url

    @property
    def kafka_version(self) -> str:
        return self._kafka().version

    @property
    def how(self) -> str:
        return self._kafka().how

    @property
    def registry_how(self) -> str:
        return self._registry().how

    @property
    def registry_name(self) -> str:
        """E.g. "Apicurio Registry 3.0.9" or the cp-schema-registry image."""
        return self._registry().implementation

    def describe(self) -> str:
        kafka, registry = self._kafka(), self._registry()
        return (
            f"Apache Kafka {kafka.version} ({kafka.how}) at {kafka.bootstrap_servers}; "
            f"schema registry {registry.implementation} ({registry.how}) at {registry.url}; "
            f"ready in {self.start_seconds:.1f}s"
        )

    def _kafka(self) -> RunningKafka:
        if self.kafka is None:
            raise RuntimeError("LocalStack is not started")
        return self.kafka

    def _registry(self) -> RunningRegistry:
        if self.registry is None:
            raise RuntimeError("LocalStack is not started")
        return self.registry

    # -- lifecycle

    def start(self) -> LocalStack:
        """Start everything; raises StackUnavailable (after cleaning up) when it can't."""
        if self.kafka is not None:
            return self
        started = time.monotonic()
        timeout = env_float("DEVSTACK_START_TIMEOUT", 120)
        registry_url = os.environ.get("SCHEMA_REGISTRY_URL", "").strip()
        pending: ApicurioProcess | None = None
        try:
            backend = choose_backend()
            if not registry_url and backend != "docker":
                # Needs no broker (in-memory storage): let it boot while the broker JVM starts.
                pending = ApicurioProcess().spawn()
            self.kafka = start_kafka(backend)
            if registry_url:
                self.registry = use_external_registry(registry_url)
            elif pending is not None:
                self.registry = pending.wait(timeout)
            else:
                self.registry = start_docker_registry(self.kafka)
        except BaseException:
            if pending is not None and self.registry is None:
                pending.stop()
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        log.info("Local stack ready: %s", self.describe())
        return self

    def stop(self) -> None:
        """Stop what this stack started (idempotent; never raises for a stopped stack)."""
        registry, self.registry = self.registry, None
        kafka, self.kafka = self.kafka, None
        try:
            if registry is not None:
                registry.stop()
        finally:
            if kafka is not None:
                kafka.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_local_stack() -> LocalStack:
    """Start a LocalStack (the caller must call .stop(), or use `with LocalStack()`)."""
    return LocalStack().start()


__all__ = ["LocalStack", "StackUnavailable", "start_local_stack"]

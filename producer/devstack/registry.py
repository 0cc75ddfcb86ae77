"""Launchers for a schema registry speaking the Confluent Schema Registry REST API.

1. ``SCHEMA_REGISTRY_URL`` is set: use it, start nothing.
2. The broker runs in Docker: a ``confluentinc/cp-schema-registry`` container on its network.
3. Otherwise: ``producer.devstack.schema_registry_server`` (in-memory, Avro) as a child
   process on a free loopback port. Neither Confluent's registry (not on Maven Central),
   Apicurio (its Maven Central artifacts are incomplete) nor Karapace (not on PyPI) can be
   installed from the registries this project may use, so the devstack ships this one.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import producer
from producer.devstack._common import (
    ManagedProcess,
    StackUnavailable,
    env_flag,
    env_float,
    make_workdir,
    wait_until,
)
from producer.devstack.kafka import DOCKER_INTERNAL_BOOTSTRAP, RunningKafka

log = logging.getLogger("producer.devstack.registry")

DEFAULT_REGISTRY_IMAGE = "confluentinc/cp-schema-registry:7.9.0"


@dataclass
class RunningRegistry:
    """A reachable schema registry; `stop()` tears down whatever this process started."""

    url: str
    how: str  # env | docker | devstack
    implementation: str
    start_seconds: float = 0.0
    log_path: Path | None = None
    _stopper: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        stopper, self._stopper = self._stopper, None
        if stopper is not None:
            stopper()


def registry_answers(url: str, user_info: str | None = None, timeout: float = 2.0) -> bool:
    """True when GET <url>/subjects gets an HTTP answer (any status: the server is up)."""
    request = urllib.request.Request(url.rstrip("/") + "/subjects")  # noqa: S310 - http(s) only
    if user_info:
        token = base64.b64encode(user_info.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310
            return True
    except urllib.error.HTTPError as exc:
        exc.close()
        return True
    except (urllib.error.URLError, OSError):
        return False


def use_external_registry(url: str) -> RunningRegistry:
    """SCHEMA_REGISTRY_URL: start nothing, but fail early when nothing answers there."""
    if not url.startswith(("http://", "https://")):
        raise StackUnavailable(f"SCHEMA_REGISTRY_URL={url!r} is not an http(s) URL")
    user_info = os.environ.get("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO") or None
    if not registry_answers(url, user_info, timeout=10):
        raise StackUnavailable(f"SCHEMA_REGISTRY_URL={url} is set but does not answer")
    log.info("Using the schema registry of SCHEMA_REGISTRY_URL=%s", url)
    return RunningRegistry(url=url, how="env", implementation="external")


class DevstackRegistryProcess:
    """`schema_registry_server` in a child process; spawn() returns at once, wait() blocks.

    The server binds port 0 and reports its port through a file, so there is no port race.
    """

    def __init__(self) -> None:
        self.workdir = make_workdir("askelephant-schema-registry-")
        self.port_file = self.workdir / "port"
        self.log_path = self.workdir / "schema-registry.log"
        self.process: ManagedProcess | None = None
        self.started = 0.0

    def spawn(self) -> DevstackRegistryProcess:
        env = dict(os.environ)
        # The child must import this very `producer` package, installed or not.
        source_root = str(Path(producer.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (source_root, env.get("PYTHONPATH", "")) if p
        )
        argv = [
            sys.executable,
            "-m",
            "producer.devstack.schema_registry_server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(self.port_file),
        ]
        self.started = time.time()
        self.process = ManagedProcess("schema registry", argv, self.log_path, env=env)
        return self

    def wait(self, timeout: float) -> RunningRegistry:
        process = self.process
        if process is None:
            raise RuntimeError("spawn() first")
        url = ""

        def ready() -> bool:
            nonlocal url
            if not url:
                if not self.port_file.is_file():
                    return False
                url = f"http://127.0.0.1:{self.port_file.read_text().strip()}"
            return registry_answers(url)

        try:
            wait_until(
                ready,
                what="devstack schema registry",
                timeout=timeout,
                process=process,
                interval=0.02,
            )
        except BaseException:
            self.stop()
            raise
        # The port file is written once the server listens: its mtime is the ready time.
        seconds = max(0.0, self.port_file.stat().st_mtime - self.started)
        log.info(
            "Schema registry (devstack, Confluent REST API) ready at %s in %.2fs (log %s)",
            url,
            seconds,
            self.log_path,
        )
        return RunningRegistry(
            url=url,
            how="devstack",
            implementation="producer.devstack.schema_registry_server (in-memory)",
            start_seconds=seconds,
            log_path=self.log_path,
            _stopper=self.stop,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=5)
            self.process = None
        if not env_flag("DEVSTACK_KEEP_LOGS", False):
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_docker_registry(kafka: RunningKafka) -> RunningRegistry:
    """A cp-schema-registry container on the broker container's network."""
    from testcontainers.core.container import DockerContainer

    image = os.environ.get("DEVSTACK_REGISTRY_IMAGE", DEFAULT_REGISTRY_IMAGE)
    started = time.monotonic()
    container = (
        DockerContainer(image)
        .with_network(kafka.docker_network)
        .with_network_aliases("schema-registry")
        .with_env("SCHEMA_REGISTRY_HOST_NAME", "schema-registry")
        .with_env("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081")
        .with_env("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS", DOCKER_INTERNAL_BOOTSTRAP)
        .with_exposed_ports(8081)
    )
    try:
        container.start()
        url = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(8081)}"
        wait_until(
            lambda: registry_answers(url),
            what=f"schema registry container {image}",
            timeout=env_float("DEVSTACK_START_TIMEOUT", 120),
            interval=0.25,
        )
    except Exception as exc:
        with contextlib.suppress(Exception):
            container.stop()
        raise StackUnavailable(
            f"Could not start the schema registry container {image}: {exc}"
        ) from exc
    seconds = time.monotonic() - started
    log.info("Schema registry container %s ready at %s in %.1fs", image, url, seconds)

    def stop() -> None:
        with contextlib.suppress(Exception):
            container.stop()

    return RunningRegistry(
        url=url,
        how="docker",
        implementation=image,
        start_seconds=seconds,
        _stopper=stop,
    )


def start_registry(kafka: RunningKafka) -> RunningRegistry:
    """Pick and start a registry for an already running broker (sequential helper)."""
    external = os.environ.get("SCHEMA_REGISTRY_URL", "").strip()
    if external:
        return use_external_registry(external)
    if kafka.how == "docker":
        return start_docker_registry(kafka)
    return DevstackRegistryProcess().spawn().wait(env_float("DEVSTACK_START_TIMEOUT", 120))

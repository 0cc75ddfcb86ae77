"""Launchers for a real Apache Kafka broker.

Chosen in this order (see `start_kafka`):

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: use that cluster, start nothing.
2. A Docker engine answers: a KRaft ``confluentinc/cp-kafka`` container via testcontainers.
3. Java 17+ (and Maven for the first run): the Apache Kafka broker jars resolved from Maven
   Central into a cache outside the repo, run as a single-node KRaft broker+controller
   (``kafka.Kafka``) on free loopback ports, with its data and log in a temporary directory.

``DEVSTACK_MODE`` (auto|env|docker|maven) forces one of them.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.resources
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from devstack._common import (
    HOW_TO_GET_A_BROKER,
    ManagedProcess,
    StackUnavailable,
    cache_root,
    dir_size_bytes,
    env_flag,
    env_float,
    file_lock,
    free_port,
    make_workdir,
    tail,
    wait_until,
)
from devstack.tls import BrokerCertificates, make_broker_certificates

log = logging.getLogger("devstack.kafka")

#: Newest Apache Kafka 4.x whose runtime artifacts are all resolvable from Maven Central.
#: (4.4.0's kafka_2.13 pom is published but its kafka-tools-api jar is not.)
DEFAULT_KAFKA_VERSION = "4.3.1"
#: Confluent Platform image for the Docker path (Kafka 3.9 inside; tested KRaft layout of
#: testcontainers' KafkaContainer).
DEFAULT_KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"
DOCKER_NETWORK_ALIAS = "kafka"
DOCKER_INTERNAL_BOOTSTRAP = f"PLAINTEXT://{DOCKER_NETWORK_ALIAS}:9092"

_PACKAGE = "devstack"
_POM = "kafka-pom.xml"
_LOG4J = "broker-log4j2.properties"
_MARKER = "install.json"


@dataclass
class RunningKafka:
    """A reachable Kafka cluster; `stop()` tears down whatever this process started."""

    bootstrap_servers: str
    version: str
    how: str  # env | docker | maven
    start_seconds: float = 0.0
    log_path: Path | None = None
    #: Docker path only: the testcontainers Network the broker is on (for the registry).
    docker_network: Any = None
    #: librdkafka properties a client needs besides bootstrap.servers (a secured broker:
    #: security.protocol, SASL credentials, CA and client certificate files); empty for
    #: a PLAINTEXT broker.
    client_config: dict[str, str] = field(default_factory=dict, repr=False)
    _stopper: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        stopper, self._stopper = self._stopper, None
        if stopper is not None:
            stopper()


# --------------------------------------------------------------------------- security

#: Client listener modes of a secured broker (`start_local_kafka(security=...)`).
SECURITY_MODES = ("sasl_ssl", "mtls")
SCRAM_MECHANISM = "SCRAM-SHA-512"
DEFAULT_SCRAM_USER = "askelephant-producer"


@dataclass(frozen=True)
class BrokerSecurity:
    """How the client listener of a secured broker is protected, and what a client needs.

    ``sasl_ssl``: TLS, then SCRAM-SHA-512 (the credentials are written into the metadata
    log when the storage is formatted, as `kafka-storage format --add-scram` does).
    ``mtls``: TLS in both directions (``ssl.client.auth=required``): a client without a
    certificate signed by the broker's CA is refused during the handshake.
    """

    mode: str
    certificates: BrokerCertificates
    username: str = DEFAULT_SCRAM_USER
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.mode not in SECURITY_MODES:
            raise StackUnavailable(
                f"broker security {self.mode!r}: expected one of {SECURITY_MODES}"
            )
        if self.mode == "sasl_ssl" and not self.password:
            raise StackUnavailable("a SASL_SSL broker needs a SCRAM password")

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.mode == "sasl_ssl" else "SSL"

    def server_properties(
        self, broker_port: int, controller_port: int, internal_port: int
    ) -> dict[str, str]:
        certs = self.certificates
        props = {
            "listeners": f"CLIENT://127.0.0.1:{broker_port},INTERNAL://127.0.0.1:{internal_port},"
            f"CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{broker_port},"
            f"INTERNAL://127.0.0.1:{internal_port}",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": f"CLIENT:{self.protocol},INTERNAL:PLAINTEXT,"
            "CONTROLLER:PLAINTEXT",
            "listener.name.client.ssl.keystore.type": "PKCS12",
            "listener.name.client.ssl.keystore.location": str(certs.broker_keystore),
            "listener.name.client.ssl.keystore.password": certs.keystore_password,
        }
        if self.mode == "sasl_ssl":
            mechanism = SCRAM_MECHANISM.lower()
            props["listener.name.client.sasl.enabled.mechanisms"] = SCRAM_MECHANISM
            # The broker only verifies SCRAM logins: its JAAS entry needs no credentials.
            props[f"listener.name.client.{mechanism}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        else:
            props["listener.name.client.ssl.client.auth"] = "required"
            props["listener.name.client.ssl.truststore.type"] = "PEM"
            props["listener.name.client.ssl.truststore.location"] = str(certs.ca.cert)
        return props

    def format_arguments(self) -> list[str]:
        """`kafka-storage format` arguments that create the SCRAM credentials."""
        if self.mode != "sasl_ssl":
            return []
        return ["--add-scram", f"{SCRAM_MECHANISM}=[name={self.username},password={self.password}]"]

    def client_config(self) -> dict[str, str]:
        """The librdkafka properties of a client that connects as it should."""
        certs = self.certificates
        conf = {"security.protocol": self.protocol, "ssl.ca.location": str(certs.ca.cert)}
        if self.mode == "sasl_ssl":
            conf.update(
                {
                    "sasl.mechanism": SCRAM_MECHANISM,
                    "sasl.username": self.username,
                    "sasl.password": self.password,
                }
            )
        else:
            conf.update(
                {
                    "ssl.certificate.location": str(certs.client.cert),
                    "ssl.key.location": str(certs.client.key),
                }
            )
        return conf


# --------------------------------------------------------------------------- selection


def kafka_mode() -> str:
    mode = os.environ.get("DEVSTACK_MODE", "auto").strip().lower() or "auto"
    if mode not in {"auto", "env", "docker", "maven"}:
        raise StackUnavailable(f"DEVSTACK_MODE={mode!r}: expected auto, env, docker or maven")
    return mode


def choose_backend() -> str:
    """Which Kafka backend start_kafka() will use: env, docker or maven."""
    mode = kafka_mode()
    if mode != "auto":
        return mode
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return "env"
    if docker_available():
        return "docker"
    if java_available():
        return "maven"
    raise StackUnavailable(f"No Kafka broker available: {HOW_TO_GET_A_BROKER}.")


def start_kafka(backend: str | None = None) -> RunningKafka:
    """Find or start a real Kafka broker (see the module docstring for the order)."""
    backend = backend or choose_backend()
    if backend == "env":
        return use_external_kafka()
    if backend == "docker":
        return start_docker_kafka()
    return start_local_kafka()


def use_external_kafka() -> RunningKafka:
    """KAFKA_BOOTSTRAP_SERVERS: start nothing, but fail early when nothing listens there."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if not external:
        raise StackUnavailable("DEVSTACK_MODE=env but KAFKA_BOOTSTRAP_SERVERS is not set")
    first = external.split(",")[0].strip()
    first = first.split("://", 1)[-1]  # tolerate PLAINTEXT://host:port
    host, _, port = first.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise StackUnavailable(
            f"KAFKA_BOOTSTRAP_SERVERS={external} is set but {first} does not answer: {exc}"
        ) from exc
    log.info("Using the Kafka cluster of KAFKA_BOOTSTRAP_SERVERS=%s", external)
    return RunningKafka(bootstrap_servers=external, version="external", how="env")


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers GET /_ping quickly (what testcontainers needs).

    Speaks HTTP on the socket itself: the docker SDK leaks its socket when no daemon runs,
    which pytest (filterwarnings=error) turns into an error.
    """
    if not env_flag("DEVSTACK_DOCKER", True):
        return False
    host = os.environ.get("DOCKER_HOST", "").strip()
    candidates: list[str] = [host] if host else []
    if not host:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        for path in (
            "/var/run/docker.sock",
            str(Path.home() / ".docker" / "run" / "docker.sock"),
            *([f"{runtime}/docker.sock"] if runtime else []),
        ):
            if Path(path).exists():
                candidates.append(f"unix://{path}")
    return any(_docker_ping(url, timeout) for url in candidates)


def _docker_ping(url: str, timeout: float) -> bool:
    try:
        if url.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = url.removeprefix("unix://")
        elif url.startswith("tcp://"):
            if os.environ.get("DOCKER_TLS_VERIFY"):
                return True  # TLS daemon: let testcontainers (docker SDK) do the talking
            host, _, port = url.removeprefix("tcp://").rstrip("/").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (host, int(port))
        else:  # ssh:// and friends: let testcontainers try
            return True
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
        return reply.startswith(b"HTTP/1.") and b" 200 " in reply
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- docker


def start_docker_kafka() -> RunningKafka:
    """A KRaft cp-kafka container (testcontainers), on its own network for the registry."""
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.15
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.kafka import KafkaContainer
    from testcontainers.core.network import Network

    image = os.environ.get("DEVSTACK_KAFKA_IMAGE", DEFAULT_KAFKA_IMAGE)
    timeout = env_float("DEVSTACK_START_TIMEOUT", 120)
    started = time.monotonic()
    network: Any = None
    container: Any = None
    try:
        network = Network().create()
        container = (
            KafkaContainer(image)
            .with_kraft()
            .with_network(network)
            .with_network_aliases(DOCKER_NETWORK_ALIAS)
        )
        container.start(timeout=int(timeout))
        bootstrap = str(container.get_bootstrap_server())
        wait_until(
            lambda: _group_coordinator_ready(bootstrap),
            what=f"Kafka group coordinator at {bootstrap}",
            timeout=timeout,
        )
    except Exception as exc:
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop()
        if network is not None:
            with contextlib.suppress(Exception):
                network.remove()
        raise StackUnavailable(f"Could not start the Kafka container {image}: {exc}") from exc
    seconds = time.monotonic() - started

    def stop() -> None:
        with contextlib.suppress(Exception):
            container.stop()
        with contextlib.suppress(Exception):
            network.remove()

    version = image.rsplit(":", 1)[-1]
    log.info("Kafka container %s ready at %s in %.1fs", image, bootstrap, seconds)
    return RunningKafka(
        bootstrap_servers=bootstrap,
        version=f"cp-kafka {version}",
        how="docker",
        start_seconds=seconds,
        docker_network=network,
        _stopper=stop,
    )


# --------------------------------------------------------------------------- local (maven)


def java_executable() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (candidate := Path(java_home) / "bin" / "java").is_file():
        return str(candidate)
    return shutil.which("java")


def java_available() -> bool:
    return java_executable() is not None


def java_version(java: str) -> str:
    """The full version of the JVM (e.g. 17.0.15); raises StackUnavailable below 17."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackUnavailable(f"`{java} -version` failed: {exc}") from exc
    match = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    if not match:
        raise StackUnavailable(f"Cannot read the Java version from: {out.stderr.strip()}")
    full = match.group(1)
    major = int(full.split(".")[0]) if not full.startswith("1.") else int(full.split(".")[1])
    if major < 17:
        raise StackUnavailable(f"Kafka 4 needs Java 17+, found {full} at {java}")
    return full


@dataclass(frozen=True)
class KafkaInstall:
    """The cached broker jars of one Kafka version."""

    version: str
    home: Path

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def bootstrap_checkpoint(self) -> Path:
        return self.home / "bootstrap.checkpoint"

    def classpath(self) -> str:
        # Explicit and sorted (not libs/*) so that the class-data-sharing archive matches.
        return os.pathsep.join(str(p) for p in sorted(self.libs.glob("*.jar")))

    def jar_version(self) -> str:
        """The version baked into the jars (kafka-clients' kafka/kafka-version.properties)."""
        for jar in self.libs.glob("kafka-clients-*.jar"):
            with zipfile.ZipFile(jar) as archive:
                props = archive.read("kafka/kafka-version.properties").decode()
            for line in props.splitlines():
                if line.startswith("version="):
                    return line.split("=", 1)[1].strip()
        return self.version


def _package_text(name: str) -> str:
    return importlib.resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def ensure_kafka_install(version: str | None = None, java: str | None = None) -> KafkaInstall:
    """Resolve the broker jars with Maven into the cache once; later calls reuse them.

    Safe against concurrent callers (a lock file serialises the download) and against
    interrupted downloads (the marker file is written last).
    """
    version = version or os.environ.get("DEVSTACK_KAFKA_VERSION") or DEFAULT_KAFKA_VERSION
    java = java or java_executable()
    if java is None:
        raise StackUnavailable(f"No `java` on PATH: {HOW_TO_GET_A_BROKER}.")
    root = cache_root()
    install = KafkaInstall(version=version, home=root / f"kafka-{version}")
    marker = install.home / _MARKER
    if marker.is_file():
        return install
    with file_lock(root / f"kafka-{version}.lock"):
        if marker.is_file():  # another process finished it while we waited
            return install
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackUnavailable(
                f"Kafka {version} is not cached in {install.home} and `mvn` is not on PATH: "
                f"{HOW_TO_GET_A_BROKER}."
            )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="kafka-download-", dir=root) as tmp:
            work = Path(tmp)
            (work / "pom.xml").write_text(_package_text(_POM), encoding="utf-8")
            libs_tmp = work / "libs"
            cmd = [
                mvn,
                "-q",
                "-B",
                f"-Dkafka.version={version}",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs_tmp}",
                "dependency:copy-dependencies",
            ]
            log.info("Downloading Apache Kafka %s broker jars with Maven into %s", version, root)
            try:
                result = subprocess.run(
                    cmd,
                    cwd=work,
                    capture_output=True,
                    text=True,
                    timeout=env_float("DEVSTACK_DOWNLOAD_TIMEOUT", 900),
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise StackUnavailable(f"Maven download of Kafka {version} timed out") from exc
            if result.returncode != 0 or not any(libs_tmp.glob("kafka_2.13-*.jar")):
                output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
                raise StackUnavailable(
                    f"Maven could not resolve Apache Kafka {version} (exit {result.returncode}):\n"
                    f"{output}"
                )
            download_seconds = time.monotonic() - started
            download_bytes = dir_size_bytes(libs_tmp)
            shutil.rmtree(install.home, ignore_errors=True)
            install.home.mkdir(parents=True)
            libs_tmp.rename(install.libs)
        _format_bootstrap_checkpoint(install, java)
        marker.write_text(
            json.dumps(
                {
                    "kafka_version": install.jar_version(),
                    "download_seconds": round(download_seconds, 1),
                    "libs_bytes": download_bytes,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        log.info(
            "Kafka %s cached in %s: %.1f MB of jars, downloaded in %.1fs",
            version,
            install.home,
            download_bytes / 1e6,
            download_seconds,
        )
    return install


def _format_bootstrap_checkpoint(install: KafkaInstall, java: str) -> None:
    """Run `kafka-storage format` once; every broker start then copies its bootstrap file.

    A formatted KRaft log dir is just meta.properties (ids, written per run) plus
    bootstrap.checkpoint (the initial feature levels, identical for every run), so the
    ~2 s JVM round trip of the storage tool is paid once per cache, not per broker start.
    """
    with tempfile.TemporaryDirectory(prefix="kafka-format-") as tmp:
        work = Path(tmp)
        data = work / "data"
        props = work / "server.properties"
        props.write_text(
            _server_properties(data, broker_port=free_port(), controller_port=free_port()),
            encoding="utf-8",
        )
        _storage_format(install, java, props, work, data)
        shutil.copyfile(data / "bootstrap.checkpoint", install.bootstrap_checkpoint)


def _storage_format(
    install: KafkaInstall, java: str, props: Path, work: Path, data: Path, *extra: str
) -> None:
    """`kafka-storage format` of `data` (the log.dirs of `props`), with `extra` arguments."""
    log4j = work / "log4j2.properties"
    if not log4j.is_file():
        log4j.write_text(_package_text(_LOG4J), encoding="utf-8")
    cmd = [
        java,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        install.classpath(),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        new_cluster_id(),
        "-c",
        str(props),
        *extra,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0 or not (data / "bootstrap.checkpoint").is_file():
        output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise StackUnavailable(f"kafka-storage format failed ({result.returncode}):\n{output}")


def new_cluster_id() -> str:
    """A Kafka Uuid string: 16 random bytes, base64url without padding (as StorageTool)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka never issues ids starting with '-'
            return text


def _server_properties(
    data_dir: Path,
    *,
    broker_port: int,
    controller_port: int,
    security: BrokerSecurity | None = None,
    internal_port: int = 0,
) -> str:
    """Single-node combined broker+controller, tuned for fast tests on a small machine.

    With `security`, clients get one listener (CLIENT: SASL_SSL or SSL with client
    authentication) and the broker talks to itself (transaction markers, ...) over a
    PLAINTEXT loopback listener (INTERNAL) that is never handed to a client.
    """
    listeners = f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
    }
    if security is not None:
        settings.update(security.server_properties(broker_port, controller_port, internal_port))
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _write_log_dir(data_dir: Path, install: KafkaInstall) -> None:
    data_dir.mkdir(parents=True)
    shutil.copyfile(install.bootstrap_checkpoint, data_dir / "bootstrap.checkpoint")
    (data_dir / "meta.properties").write_text(
        f"version=1\nnode.id=1\ncluster.id={new_cluster_id()}\ndirectory.id={new_cluster_id()}\n",
        encoding="utf-8",
    )


def _broker_ready(bootstrap: str, client_config: dict[str, str] | None = None) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, int(port))) != 0:
            return False
    admin = AdminClient({**(client_config or {}), "bootstrap.servers": bootstrap, "log_level": 0})
    metadata = admin.list_topics(timeout=2)
    return bool(metadata.brokers)


def _group_coordinator_ready(bootstrap: str, client_config: dict[str, str] | None = None) -> bool:
    """Fetch a group's committed offset: makes the broker create and load __consumer_offsets.

    Done during start-up it costs ~1 s; left to the first consumer of a test it costs ~3 s.
    (A plain consumer, on purpose: librdkafka 2.16's AdminClient.list_consumer_group_offsets
    can segfault while the coordinator is still loading.)
    """
    consumer = Consumer(
        {
            **(client_config or {}),
            "bootstrap.servers": bootstrap,
            "group.id": "devstack-warm-up",
            "log_level": 0,
        }
    )
    try:
        consumer.committed([TopicPartition("devstack-warm-up", 0)], timeout=10)
    finally:
        consumer.close()
    return True


class LocalKafkaBroker:
    """One `kafka.Kafka` JVM (KRaft broker+controller) using the cached jars."""

    def __init__(
        self,
        install: KafkaInstall,
        java: str,
        java_full_version: str,
        security: str | None = None,
        scram_password: str | None = None,
    ) -> None:
        self.install = install
        self.java = java
        self.java_version = java_full_version
        self.workdir = make_workdir("askelephant-kafka-broker-")
        self.security: BrokerSecurity | None = None
        if security is not None:
            try:
                self.security = BrokerSecurity(
                    security,
                    make_broker_certificates(self.workdir / "tls"),
                    password=scram_password or f"devstack-{secrets.token_hex(12)}",
                )
            except BaseException:
                shutil.rmtree(self.workdir, ignore_errors=True)
                raise
        self.process: ManagedProcess | None = None
        self.bootstrap_servers = ""
        self._cds_dump: Path | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    def _cds_options(self) -> list[str]:
        """Class-data sharing: the first run dumps an archive; later JVMs start about 2x faster."""
        if not env_flag("DEVSTACK_KAFKA_CDS", True):
            return []
        cds_dir = self.install.home / "cds"
        cds_dir.mkdir(exist_ok=True)
        archive = cds_dir / f"java-{self.java_version}.jsa"
        if archive.is_file():
            return [f"-XX:SharedArchiveFile={archive}"]
        for stale in cds_dir.glob("*.tmp*"):  # dumps of runs that were killed
            if time.time() - stale.stat().st_mtime > 600:
                stale.unlink(missing_ok=True)
        self._cds_dump = cds_dir / f"{archive.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return [f"-XX:ArchiveClassesAtExit={self._cds_dump}"]

    def start(self, timeout: float) -> float:
        """Start the JVM and wait until it serves metadata; returns the seconds it took."""
        (self.workdir / "log4j2.properties").write_text(_package_text(_LOG4J), encoding="utf-8")
        security = self.security
        client_config = security.client_config() if security is not None else {}
        for attempt in range(1, 4):
            broker_port, controller_port = free_port(), free_port()
            data = self.workdir / f"data-{attempt}"
            props = self.workdir / "server.properties"
            props.write_text(
                _server_properties(
                    data,
                    broker_port=broker_port,
                    controller_port=controller_port,
                    security=security,
                    internal_port=free_port() if security is not None else 0,
                ),
                encoding="utf-8",
            )
            if security is not None and security.format_arguments():
                # SCRAM credentials live in the metadata log: this storage is formatted for
                # this broker (one more short JVM) instead of copying the cached bootstrap file.
                _storage_format(
                    self.install,
                    self.java,
                    props,
                    self.workdir,
                    data,
                    *security.format_arguments(),
                )
            else:
                _write_log_dir(data, self.install)
            heap = os.environ.get("DEVSTACK_KAFKA_HEAP", "512m")
            argv = [
                self.java,
                f"-Xmx{heap}",
                "-Xms128m",
                "-XX:+UseSerialGC",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                *self._cds_options(),
                *os.environ.get("DEVSTACK_KAFKA_JVM_OPTS", "").split(),
                "-cp",
                self.install.classpath(),
                "kafka.Kafka",
                str(props),
            ]
            started = time.monotonic()
            self.bootstrap_servers = f"127.0.0.1:{broker_port}"
            self.process = ManagedProcess("kafka broker", argv, self.log_path, cwd=self.workdir)
            try:
                wait_until(
                    lambda: _broker_ready(self.bootstrap_servers, client_config),
                    what=f"Kafka broker at {self.bootstrap_servers}",
                    timeout=timeout,
                    process=self.process,
                )
                wait_until(
                    lambda: _group_coordinator_ready(self.bootstrap_servers, client_config),
                    what=f"Kafka group coordinator at {self.bootstrap_servers}",
                    timeout=timeout,
                    process=self.process,
                )
                return time.monotonic() - started
            except StackUnavailable:
                port_clash = "Address already in use" in tail(self.log_path, 200)
                self._stop_process(keep_cds=False)
                if not port_clash or attempt == 3:
                    raise
                log.warning("Kafka port clash on attempt %d; retrying on other ports", attempt)
        raise AssertionError("unreachable")

    def _stop_process(self, *, keep_cds: bool) -> None:
        if self.process is None:
            return
        dumping = self._cds_dump is not None
        code = self.process.stop(timeout=60 if dumping else 15)
        self.process = None
        if self._cds_dump is not None:
            if keep_cds and code in (0, 143) and self._cds_dump.is_file():
                with contextlib.suppress(OSError):
                    os.replace(
                        self._cds_dump,
                        self._cds_dump.with_name(self._cds_dump.name.split(".tmp")[0]),
                    )
            self._cds_dump.unlink(missing_ok=True)
            self._cds_dump = None

    def stop(self) -> None:
        started = time.monotonic()
        self._stop_process(keep_cds=True)
        if env_flag("DEVSTACK_KEEP_LOGS", False):
            log.info("Kept the broker's data and log in %s (DEVSTACK_KEEP_LOGS)", self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("Kafka broker stopped in %.1fs", time.monotonic() - started)


def start_local_kafka(
    security: str | None = None, *, scram_password: str | None = None
) -> RunningKafka:
    """The Maven/Java path: cached Apache Kafka jars, one KRaft JVM on loopback ports.

    `security` ("sasl_ssl" or "mtls", see `BrokerSecurity`) secures the client listener with
    certificates made for this broker; `RunningKafka.client_config` then holds what a client
    needs. `scram_password` (SASL_SSL): the password of `DEFAULT_SCRAM_USER` (default: random).
    """
    java = java_executable()
    if java is None:
        raise StackUnavailable(f"No `java` on PATH: {HOW_TO_GET_A_BROKER}.")
    full_version = java_version(java)
    install = ensure_kafka_install(java=java)
    broker = LocalKafkaBroker(install, java, full_version, security, scram_password)
    try:
        seconds = broker.start(timeout=env_float("DEVSTACK_START_TIMEOUT", 120))
    except BaseException:
        broker.stop()
        raise
    version = install.jar_version()
    log.info(
        "Apache Kafka %s broker ready at %s%s in %.1fs (Java %s, pid %d, log %s)",
        version,
        broker.bootstrap_servers,
        f" ({broker.security.protocol})" if broker.security else "",
        seconds,
        full_version,
        broker.process.pid if broker.process else -1,
        broker.log_path,
    )
    return RunningKafka(
        bootstrap_servers=broker.bootstrap_servers,
        version=version,
        how="maven",
        start_seconds=seconds,
        log_path=broker.log_path,
        client_config=broker.security.client_config() if broker.security else {},
        _stopper=broker.stop,
    )

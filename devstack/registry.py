"""Launchers for a schema registry speaking the Confluent Schema Registry REST API.

1. ``SCHEMA_REGISTRY_URL`` is set: use it, start nothing.
2. The broker runs in Docker: a ``confluentinc/cp-schema-registry`` container on its network.
3. Otherwise: **Apicurio Registry** (``io.apicurio:apicurio-registry-app``, the runnable
   Quarkus distribution on Maven Central), fetched by Maven into the same cache as the Kafka
   jars and run on Java with in-memory storage; its Confluent-compatible API lives under
   ``/apis/ccompat/v7``. Its global compatibility starts at NONE, so it is set at start-up
   (BACKWARD, as Confluent's registry starts) before anyone registers a schema.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack._common import (
    HOW_TO_GET_A_BROKER,
    ManagedProcess,
    StackUnavailable,
    cache_root,
    env_flag,
    env_float,
    file_lock,
    free_port,
    make_workdir,
    tail,
    wait_until,
)
from devstack.kafka import (
    DOCKER_INTERNAL_BOOTSTRAP,
    RunningKafka,
    java_executable,
    java_version,
)
from devstack.tls import LOOPBACK_SANS, Certificate, CertificateAuthority, issue, make_ca

log = logging.getLogger("devstack.registry")

DEFAULT_REGISTRY_IMAGE = "confluentinc/cp-schema-registry:7.9.0"


@dataclass
class RunningRegistry:
    """A reachable schema registry; `stop()` tears down whatever this process started."""

    url: str
    how: str  # env | docker | maven
    implementation: str
    version: str = ""
    start_seconds: float = 0.0
    log_path: Path | None = None
    #: Registry-client properties besides `url` (a secured registry: `ssl.ca.location` and
    #: `basic.auth.user.info`); empty for a plain HTTP registry without credentials.
    client_config: dict[str, str] = field(default_factory=dict, repr=False)
    _stopper: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        stopper, self._stopper = self._stopper, None
        if stopper is not None:
            stopper()


def registry_answers(
    url: str,
    user_info: str | None = None,
    timeout: float = 2.0,
    context: ssl.SSLContext | None = None,
) -> bool:
    """True when GET <url>/subjects gets an HTTP answer (any status: the server is up)."""
    request = urllib.request.Request(url.rstrip("/") + "/subjects")  # noqa: S310 - http(s) only
    if user_info:
        token = base64.b64encode(user_info.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context):  # noqa: S310
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


#: Apicurio Registry release run on the Java path. 3.0.x runs on Java 17 (3.3.x needs 21).
DEFAULT_APICURIO_VERSION = "3.0.9"
APICURIO_ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
#: Where Apicurio serves the Confluent Schema Registry REST API.
CCOMPAT_PATH = "/apis/ccompat/v7"
#: Global compatibility set at start-up: Confluent's default, which is what a producer
#: deployed against cp-schema-registry meets (docs/events.md: the schemas themselves keep
#: FULL_TRANSITIVE, checked per subject by tests/integration/test_schema_evolution.py).
DEFAULT_COMPATIBILITY = "BACKWARD"
_MARKER = "install.json"


@dataclass(frozen=True)
class ApicurioInstall:
    """The cached, extracted Apicurio Registry distribution of one version."""

    version: str
    home: Path

    @property
    def runner_jar(self) -> Path:
        return self.home / "app" / f"apicurio-registry-app-{self.version}-runner.jar"

    def info(self) -> dict[str, Any]:
        """What install.json recorded about the download (size, seconds)."""
        try:
            data: dict[str, Any] = json.loads((self.home / _MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data


def ensure_apicurio_install(version: str | None = None) -> ApicurioInstall:
    """Fetch the distribution with Maven and extract it into the cache, once.

    Same rules as the Kafka jars: a lock file serialises concurrent first runs, and the
    marker file is written last, so an interrupted download is redone, never half-used.
    """
    version = version or os.environ.get("DEVSTACK_APICURIO_VERSION") or DEFAULT_APICURIO_VERSION
    root = cache_root()
    install = ApicurioInstall(version=version, home=root / f"apicurio-registry-{version}")
    marker = install.home / _MARKER
    if marker.is_file():
        return install
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f"apicurio-registry-{version}.lock"):
        if marker.is_file():  # another process finished it while we waited
            return install
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackUnavailable(
                f"Apicurio Registry {version} is not cached in {install.home} and `mvn` is "
                f"not on PATH: {HOW_TO_GET_A_BROKER}."
            )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="apicurio-download-", dir=root) as tmp:
            work = Path(tmp)
            cmd = [
                mvn,
                "-q",
                "-B",
                f"-Dartifact={APICURIO_ARTIFACT.format(version=version)}",
                f"-DoutputDirectory={work}",
                "dependency:copy",
            ]
            log.info("Downloading Apicurio Registry %s with Maven into %s", version, root)
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
                raise StackUnavailable(f"Maven download of Apicurio {version} timed out") from exc
            archives = list(work.glob("apicurio-registry-app-*.tar.gz"))
            if result.returncode != 0 or not archives:
                output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
                raise StackUnavailable(
                    f"Maven could not resolve Apicurio Registry {version} "
                    f"(exit {result.returncode}):\n{output}"
                )
            download_seconds = time.monotonic() - started
            download_bytes = archives[0].stat().st_size
            app_tmp = work / "app"
            with tarfile.open(archives[0]) as archive:
                # "data" refuses absolute paths, links out of the tree and device files.
                archive.extractall(app_tmp, filter="data")
            shutil.rmtree(install.home, ignore_errors=True)
            install.home.mkdir(parents=True)
            app_tmp.rename(install.home / "app")
        if not install.runner_jar.is_file():
            raise StackUnavailable(f"No {install.runner_jar.name} in the Apicurio distribution")
        marker.write_text(
            json.dumps(
                {
                    "apicurio_version": version,
                    "download_seconds": round(download_seconds, 1),
                    "download_bytes": download_bytes,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        log.info(
            "Apicurio Registry %s cached in %s: %.1f MB downloaded in %.1fs",
            version,
            install.home,
            download_bytes / 1e6,
            download_seconds,
        )
    return install


def _http_json(
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    timeout: float = 10.0,
    *,
    user_info: str | None = None,
    context: ssl.SSLContext | None = None,
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    request.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    if user_info:
        token = base64.b64encode(user_info.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


DEFAULT_REGISTRY_USER = "askelephant-registry"


@dataclass(frozen=True)
class RegistrySecurity:
    """HTTPS with basic authentication, done by Apicurio itself (Quarkus): TLS with a
    certificate made for this registry, and every path behind its embedded user store, so
    a request without valid credentials gets 401 and plain HTTP is not served at all.

    (Client certificates cannot be required: Quarkus fixes `quarkus.http.ssl.client-auth`
    when the application is built, and Apicurio's build leaves it off.)
    """

    ca: CertificateAuthority
    server: Certificate
    username: str = DEFAULT_REGISTRY_USER
    password: str = field(default="", repr=False)

    @property
    def user_info(self) -> str:
        return f"{self.username}:{self.password}"

    def quarkus_properties(self) -> dict[str, str]:
        return {
            "quarkus.http.insecure-requests": "disabled",
            "quarkus.tls.key-store.pem.0.cert": str(self.server.cert),
            "quarkus.tls.key-store.pem.0.key": str(self.server.key),
            "quarkus.http.auth.basic": "true",
            "quarkus.security.users.embedded.enabled": "true",
            "quarkus.security.users.embedded.plain-text": "true",
            f"quarkus.security.users.embedded.users.{self.username}": self.password,
            f"quarkus.security.users.embedded.roles.{self.username}": "sr-admin",
            "quarkus.http.auth.permission.registry.paths": "/*",
            "quarkus.http.auth.permission.registry.policy": "authenticated",
        }

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.cert))

    def client_config(self) -> dict[str, str]:
        """The registry client's properties (confluent-kafka's names) besides `url`."""
        return {"ssl.ca.location": str(self.ca.cert), "basic.auth.user.info": self.user_info}


class ApicurioProcess:
    """Apicurio Registry in a child JVM; spawn() returns at once, wait() blocks until ready.

    Spawning first and waiting later lets the registry boot while the broker JVM boots.
    With `secured`, it serves HTTPS only and asks for basic-auth credentials
    (`RegistrySecurity`; `password` default: random).
    """

    def __init__(self, *, secured: bool = False, password: str | None = None) -> None:
        self.workdir = make_workdir("askelephant-apicurio-")
        self.log_path = self.workdir / "apicurio.log"
        self.process: ManagedProcess | None = None
        self.install: ApicurioInstall | None = None
        self.port = 0
        self.started = 0.0
        self.security: RegistrySecurity | None = None
        if secured:
            try:
                tls = self.workdir / "tls"
                ca = make_ca(tls)
                self.security = RegistrySecurity(
                    ca=ca,
                    server=issue(ca, tls, "registry", sans=LOOPBACK_SANS),
                    password=password or f"devstack-{secrets.token_hex(12)}",
                )
            except BaseException:
                shutil.rmtree(self.workdir, ignore_errors=True)
                raise

    @property
    def base_url(self) -> str:
        scheme = "https" if self.security is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + CCOMPAT_PATH

    def spawn(self) -> ApicurioProcess:
        java = java_executable()
        if java is None:
            raise StackUnavailable(
                f"No `java` on PATH for Apicurio Registry: {HOW_TO_GET_A_BROKER}."
            )
        java_version(java)  # Apicurio 3.0 needs Java 17+, like the broker
        self.install = ensure_apicurio_install()
        self.port = free_port()
        port_property = "quarkus.http.port"
        if self.security is not None:
            # Quarkus reads config/application.properties in its working directory: the
            # password stays in a file only this user can read, off the command line.
            config = self.workdir / "config" / "application.properties"
            config.parent.mkdir(exist_ok=True)
            config.write_text(
                "".join(f"{k}={v}\n" for k, v in self.security.quarkus_properties().items()),
                encoding="utf-8",
            )
            config.chmod(0o600)
            port_property = "quarkus.http.ssl-port"
        heap = os.environ.get("DEVSTACK_APICURIO_HEAP", "256m")
        argv = [
            java,
            f"-Xmx{heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # C1 only: a faster start, and tests are short
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Dquarkus.http.host=127.0.0.1",
            f"-D{port_property}={self.port}",
            # One line per request would bury the start-up lines in the log.
            "-Dquarkus.http.access-log.enabled=false",
            *os.environ.get("DEVSTACK_APICURIO_JVM_OPTS", "").split(),
            "-jar",
            str(self.install.runner_jar),
        ]
        self.started = time.monotonic()
        self.process = ManagedProcess("apicurio registry", argv, self.log_path, cwd=self.workdir)
        return self

    def wait(self, timeout: float) -> RunningRegistry:
        process, install = self.process, self.install
        if process is None or install is None:
            raise RuntimeError("spawn() first")
        security = self.security
        context = security.ssl_context() if security is not None else None
        user_info = security.user_info if security is not None else None
        try:
            for attempt in range(1, 4):
                try:
                    wait_until(
                        lambda: registry_answers(self.url, context=context),
                        what=f"Apicurio Registry at {self.url}",
                        timeout=timeout,
                        process=process,
                        interval=0.1,
                    )
                    break
                except StackUnavailable:
                    # free_port() can lose a race with another process: take another port.
                    if attempt == 3 or "already" not in tail(self.log_path, 200):
                        raise
                    log.warning("Apicurio port clash on attempt %d; retrying", attempt)
                    process.stop(timeout=5)
                    process = self.spawn().process
                    assert process is not None
            seconds = time.monotonic() - self.started
            compatibility = os.environ.get(
                "DEVSTACK_REGISTRY_COMPATIBILITY", DEFAULT_COMPATIBILITY
            ).upper()
            _http_json(
                "PUT",
                self.url + "/config",
                {"compatibility": compatibility},
                user_info=user_info,
                context=context,
            )
            info = _http_json(
                "GET",
                self.base_url + "/apis/registry/v3/system/info",
                user_info=user_info,
                context=context,
            )
            version = str(info.get("version", install.version)) if isinstance(info, dict) else ""
        except BaseException as exc:
            self.stop()
            if isinstance(exc, urllib.error.URLError | OSError | ValueError):
                raise StackUnavailable(
                    f"Apicurio Registry did not accept its configuration: {exc}; "
                    f"last lines of its log:\n{tail(self.log_path)}"
                ) from exc
            raise
        log.info(
            "Apicurio Registry %s (in-memory, Confluent API at %s%s, compatibility %s) "
            "ready in %.1fs (pid %d, log %s)",
            version,
            self.url,
            ", basic auth" if security is not None else "",
            compatibility,
            seconds,
            process.pid,
            self.log_path,
        )
        return RunningRegistry(
            url=self.url,
            how="maven",
            implementation=f"Apicurio Registry {version}",
            version=version,
            start_seconds=seconds,
            log_path=self.log_path,
            client_config=security.client_config() if security is not None else {},
            _stopper=self.stop,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=15)
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
    return ApicurioProcess().spawn().wait(env_float("DEVSTACK_START_TIMEOUT", 120))


def start_secure_registry(password: str | None = None) -> RunningRegistry:
    """Apicurio Registry behind HTTPS and basic auth (`RegistrySecurity`); what a client
    needs is in `RunningRegistry.client_config`."""
    return (
        ApicurioProcess(secured=True, password=password)
        .spawn()
        .wait(env_float("DEVSTACK_START_TIMEOUT", 120))
    )

"""Shared fixtures of the deployment tests (Dockerfile, docker-compose.yml, Helm chart).

The command-line tools come from ``.tools/bin`` (installed by scripts/install-tools.sh).
When one is missing the tests that need it are skipped locally and FAIL on CI
(``CI=true``), so that a CI machine without the tools can never pass silently.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = Path(os.environ.get("ASKELEPHANT_TOOLS_BIN") or REPO_ROOT / ".tools" / "bin")
"""Where `make tools` puts helm and promtool; the variable lets a test hide them."""
CHART_DIR = REPO_ROOT / "helm" / "askelephant-kafka"
CONTRACTS = REPO_ROOT / "docs" / "CONTRACTS.md"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"

RELEASE = "test"
NAMESPACE = "askelephant"
#: Kubernetes versions the rendered manifests are validated against (both ship
#: with the kubernetes-validate package; keep them within its supported range).
KUBERNETES_VERSIONS = ("1.31.0", "1.35.0")
#: The simulator's default API key (docs/CONTRACTS.md, "Simulator").
SIMULATOR_API_KEY = "sk-apik_simulator.localdevsecret"

INSTALL_HINT = "run scripts/install-tools.sh"


def _missing_tool(message: str) -> None:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message} ({INSTALL_HINT}; CI must install it)", pytrace=False)
    pytest.skip(f"{message}: {INSTALL_HINT}")


def _tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        _missing_tool(f"{name} not found in {TOOLS_BIN}")
    return path


# --------------------------------------------------------------------------- contract


def producer_config_env_names() -> tuple[frozenset[str], tuple[str, ...]]:
    """Environment variable names the producer's configuration understands, as
    ``(exact names, name prefixes)``: the ONE source is ``producer.config``.
    """
    from producer.config import KAFKA_PROPERTY_PREFIX, OPTION_NAMES

    return OPTION_NAMES, (KAFKA_PROPERTY_PREFIX,)


def is_producer_config_env(name: str) -> bool:
    names, prefixes = producer_config_env_names()
    return name in names or any(name.startswith(p) and len(name) > len(p) for p in prefixes)


def contract_default(name: str) -> str:
    """The default of a configuration variable, as written in docs/CONTRACTS.md."""
    text = CONTRACTS.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(name)}\s+(\S+)", text, re.M)
    assert match, f"{name} not in {CONTRACTS}"
    return match.group(1)


# --------------------------------------------------------------------------- helm


class HelmError(AssertionError):
    """`helm template` failed; the message holds helm's stderr."""


@dataclass(frozen=True)
class Rendered:
    """The objects of one `helm template` run."""

    objects: tuple[dict[str, Any], ...]
    text: str

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [o for o in self.all(kind) if o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        assert len(found) <= 1, f"more than one {kind}"
        return found[0] if found else None

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod_spec["containers"]
        assert len(containers) == 1
        container: dict[str, Any] = containers[0]
        return container

    def env(self) -> dict[str, dict[str, Any]]:
        """Container env entries by name."""
        return {e["name"]: e for e in self.container.get("env", [])}

    def config_env(self) -> dict[str, str]:
        """The ConfigMap the container loads with envFrom."""
        refs = [s["configMapRef"]["name"] for s in self.container["envFrom"] if "configMapRef" in s]
        assert len(refs) >= 1
        config_maps = {c["metadata"]["name"]: c for c in self.all("ConfigMap")}
        data: dict[str, str] = config_maps[refs[0]]["data"]
        return data


class Helm:
    """Runs the helm binary on the chart with an isolated, throw-away helm home."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self._cache: dict[str, Rendered] = {}

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=REPO_ROOT,
            timeout=120,
            check=False,
        )

    def template_args(
        self, values_files: Iterable[Path] = (), values: Mapping[str, Any] | None = None
    ) -> tuple[list[str], str | None]:
        args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
        for path in values_files:
            args += ["--values", str(path)]
        stdin = None
        if values is not None:
            args += ["--values", "-"]
            stdin = yaml.safe_dump(dict(values))
        return args, stdin

    def template(
        self, values_files: Iterable[Path] = (), values: Mapping[str, Any] | None = None
    ) -> Rendered:
        """Render the chart; raises HelmError when helm refuses the values."""
        args, stdin = self.template_args(values_files, values)
        key = repr((args, stdin))
        if key not in self._cache:
            result = self.run(*args, stdin=stdin)
            if result.returncode != 0:
                raise HelmError(result.stderr.strip() or result.stdout.strip())
            objects = tuple(d for d in yaml.safe_load_all(result.stdout) if d)
            self._cache[key] = Rendered(objects, result.stdout)
        return self._cache[key]

    def template_error(
        self, values_files: Iterable[Path] = (), values: Mapping[str, Any] | None = None
    ) -> str:
        """Render the chart expecting a refusal; returns helm's error message."""
        with pytest.raises(HelmError) as excinfo:
            self.template(values_files, values)
        return str(excinfo.value)


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return _tool("helm")


@pytest.fixture(scope="session")
def helm(helm_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_bin, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def promtool() -> Path:
    return _tool("promtool")


@pytest.fixture(scope="session")
def kubernetes_validate() -> list[str]:
    """Command line of kubernetes-validate (a Python package of the project venv)."""
    script = Path(sys.executable).parent / "kubernetes-validate"
    if script.is_file():
        return [str(script)]
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        _missing_tool("the kubernetes-validate package is not installed in this Python")
    return [sys.executable, "-m", "kubernetes_validate"]


def ci_values_files() -> list[Path]:
    files = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
    assert files, f"no ci/*-values.yaml in {CHART_DIR}"
    return files


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)

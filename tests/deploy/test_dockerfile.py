"""The Dockerfile and .dockerignore, checked statically (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.conftest import (
    CHART_DIR,
    DOCKERFILE,
    REPO_ROOT,
    contract_default,
    load_yaml,
)

pytestmark = pytest.mark.unit


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARGs (before the first FROM) with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        logical.append(current)
        current = ""
    assert not current, "dangling line continuation"
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def parse(path: Path = DOCKERFILE) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions(path.read_text(encoding="utf-8")):
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match, rest
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), match[1])
            stages.append(Stage(base, match[2]))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse()


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(v, str) for v in value), args
    return value


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for match in re.finditer(r'(\w+)=("[^"]*"|\S+)', args):
            env[match[1]] = match[2].strip('"')
    return env


def test_multi_stage_build(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    build, final = dockerfile.stages[0], dockerfile.final
    assert build.name, "the build stage must be named"
    assert any("pip wheel" in run for run in build.all("RUN")), "stage 1 builds the wheel"
    install = " ".join(final.all("RUN"))
    assert "-m venv" in install, "the final stage installs into a virtualenv"
    assert "--no-index" in install, "the final stage installs only the built wheels"
    assert f"from={build.name}" in install or any(
        f"--from={build.name}" in c for c in final.all("COPY")
    ), "the final stage takes the wheels from the build stage"


def test_base_images_are_pinned_slim_python(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        image = stage.base
        if image in {s.name for s in dockerfile.stages}:
            continue
        assert "$" not in image, f"unresolved base image {image}"
        repository, _, tag = image.partition(":")
        assert repository == "python", image
        assert re.fullmatch(r"3\.1[12](\.\d+)?-slim(-\w+)?", tag), f"{image} is not pinned slim"


def test_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    user = final.last("USER")
    args = {k: v for k, _, v in (a.partition("=") for a in final.all("ARG"))}
    resolved = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), user)
    uid, _, gid = resolved.partition(":")
    assert uid.isdigit(), f"USER {user} is not numeric"
    assert int(uid) >= 10000, f"USER {user} is not an unprivileged UID"
    assert not gid or gid.isdigit()
    # The instructions after USER run as that user: nothing may need root there.
    after_user = final.instructions[[kw for kw, _ in final.instructions].index("USER") :]
    assert not [a for kw, a in after_user if kw == "RUN"]
    # The chart and the compose stack run with the same UID.
    values = load_yaml(CHART_DIR / "values.yaml")
    assert values["securityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    compose = load_yaml(REPO_ROOT / "docker-compose.yml")
    assert compose["services"]["producer"]["user"].split(":")[0] == uid


def test_read_only_root_filesystem_friendly(dockerfile: Dockerfile) -> None:
    env = env_of(dockerfile.final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp"
    assert env.get("TMPDIR", "/tmp") == "/tmp"
    assert "/opt/venv/bin" in env["PATH"]
    assert not dockerfile.final.all("VOLUME"), "a VOLUME would hide the read-only root"


def test_entrypoint_and_cmd(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    assert exec_form(final.last("ENTRYPOINT")) == ["askelephant-kafka"]
    assert exec_form(final.last("CMD")) == ["run"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "askelephant-kafka" in scripts["project"]["scripts"]


def test_exposes_and_probes_the_metrics_port(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    port = contract_default("METRICS_PORT")
    assert final.last("EXPOSE").split() == [port]
    healthcheck = final.last("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert re.search(r"--interval=\d+s", options)
    assert re.search(r"--timeout=\d+s", options)
    argv = exec_form(command)
    assert argv[0] == "python", "no curl/wget in the slim image: probe with python"
    assert argv[1] == "-c"
    snippet = argv[-1]
    compile(snippet, "<HEALTHCHECK>", "exec")
    assert "http://127.0.0.1:" in snippet
    assert "/healthz" in snippet
    assert "METRICS_PORT" in snippet  # follows an overridden port ...
    assert f"'{port}'" in snippet  # ... and defaults to the contract's
    assert env_of(final).get("METRICS_PORT", port) == port


# --------------------------------------------------------------------------- .dockerignore


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; `!` re-includes;
    a pattern matching a directory covers everything below it."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            tail = pattern.removeprefix("**/")
            hit = any(fnmatch.fnmatch(part, tail) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    text = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [".git/config", ".venv/bin/python", ".tools/bin/helm", ".env", "tests/unit/x.py",
     "helm/askelephant-kafka/values.yaml", "producer/__pycache__/cli.cpython-311.pyc"],
)  # fmt: skip
def test_dockerignore_keeps_out(path: str, ignore_patterns: list[str]) -> None:
    assert _ignored(path, ignore_patterns), path


def test_dockerignore_lets_in_every_copied_source(
    dockerfile: Dockerfile, ignore_patterns: list[str]
) -> None:
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            if any(w.startswith("--from") for w in copy.split()):
                continue
            for source in words[:-1]:
                if "*" in source:
                    continue  # optional glob (README.md*)
                assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not _ignored(source, ignore_patterns), f"COPY {source}: ignored"
    assert not _ignored("producer/cli.py", ignore_patterns)
    assert not _ignored("schemas/contacts.avsc", ignore_patterns)


def test_the_default_image_holds_the_product_alone(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    args = {k: v for k, _, v in (a.partition("=") for a in final.all("ARG"))}
    assert args["WITH_SIMULATOR"] == "false"
    install = " ".join(final.all("RUN"))
    # The simulator is only installed behind the build argument.
    guarded = install.split('if [ "${WITH_SIMULATOR}" = "true" ]; then', 1)
    assert len(guarded) == 2, install
    assert "askelephant-simulator" not in guarded[0]
    assert "askelephant-simulator" in re.split(r";\s*fi\b", guarded[1], maxsplit=1)[0]

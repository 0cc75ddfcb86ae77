"""The docs name only what exists: every `askelephant-kafka` command and its flags, and every
environment variable named in README.md and docs/*.md, is one the code knows (the reverse for
settings, every one in the README table, is test_config's)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.cli import build_parser
from producer.config import KAFKA_PROPERTY_PREFIX, OPTION_NAMES, _probe_property

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [
    *(ROOT / "producer").rglob("*.py"),
    *(ROOT / "simulator").rglob("*.py"),
    *(ROOT / "devstack").rglob("*.py"),
    *(ROOT / "benchmarks").rglob("*.py"),
    *(ROOT / "tests").rglob("*.py"),
    ROOT / "docker-compose.yml",
]
INVOCATION = re.compile(
    r"(?:askelephant-kafka|python -m producer)\s+([a-z][a-z-]*)((?:[ \t]+[^\s`|#]+)*)"
)
ENV_NAME = re.compile(r"(?<![\w$.-])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?![\w*<-])")
PROJECT_PREFIXES = ("ASKELEPHANT_", "KAFKA_", "SCHEMA_REGISTRY_", "DEVSTACK_", "SIMULATOR_")
"""Names with these prefixes are ours (settings, pass-through, test tooling) wherever they
appear; other upper-case names count as variables only where they are assigned (`NAME=`)."""


def doc_lines() -> Iterator[tuple[str, int, str]]:
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield path.name, number, line


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def test_every_command_and_flag_in_the_docs_exists() -> None:
    commands = subparsers(build_parser())
    wrong = []
    for name, number, line in doc_lines():
        for command, rest in INVOCATION.findall(line):
            if command not in commands:
                wrong.append(f"{name}:{number}: no command {command!r}")
                continue
            if command == "simulator":  # its own parser, outside this CLI's
                continue
            parser = commands[command]
            words = rest.split()
            nested = subparsers(parser)
            if words and words[0] in nested:
                parser = nested[words[0]]
            known = options(parser)
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
                if flag not in known:
                    wrong.append(f"{name}:{number}: {command} has no {flag}")
    assert wrong == []


def names_in_code() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in SOURCES)


def known_variable(name: str, code: str) -> bool:
    if name in OPTION_NAMES:
        return True
    if name.startswith(KAFKA_PROPERTY_PREFIX):  # passed through when librdkafka knows it
        prop = name.removeprefix(KAFKA_PROPERTY_PREFIX).lower().replace("_", ".")
        if _probe_property(prop, "x") != "unknown":
            return True
    # read somewhere: os.environ.get("NAME"), env_flag("NAME", ...), ${NAME:-...}
    return re.search(rf"[\"'{{]{name}[\"':}}]", code) is not None


def test_every_environment_variable_in_the_docs_exists() -> None:
    code = names_in_code()
    wrong = []
    for name, number, line in doc_lines():
        for match in ENV_NAME.finditer(line):
            variable = match.group(0)
            assigned = line[match.end() : match.end() + 1] == "="
            if not (variable.startswith(PROJECT_PREFIXES) or assigned):
                continue
            if not known_variable(variable, code):
                wrong.append(f"{name}:{number}: {variable}")
    assert wrong == []

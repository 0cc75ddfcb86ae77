"""The Avro value schemas (schemas/*.avsc) and their loader (producer/schemas.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fastavro
import pytest

from producer import schemas

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"

RECORD_NAMES = {
    "contacts": "Contact",
    "companies": "Company",
    "users": "User",
    "tags": "Tag",
    "engagements": "Engagement",
}

# Every field docs/askelephant-api.md §2.4 documents per resource, without media_url and the
# expansions.
AFTER_FIELDS = {
    "contacts": [
        "object", "id", "created_at", "updated_at", "first_name", "last_name", "description",
        "company", "emails", "phone_numbers", "crm_association", "time_zone",
    ],
    "companies": [
        "object", "id", "created_at", "updated_at", "name", "description", "industry",
        "website", "number_of_employees", "logo_url", "crm_association", "domains",
    ],
    "users": [
        "object", "id", "role", "created_at", "updated_at", "first_name", "last_name",
        "job_title", "emails", "time_zone", "last_activity_at",
    ],
    "tags": [
        "object", "id", "name", "created_at", "updated_at", "hex_color", "description",
        "auto_tagging_enabled",
    ],
    "engagements": [
        "object", "id", "title", "engagement_type", "processing_status", "is_private",
        "created_at", "updated_at", "description", "data_source", "is_internal",
        "engagement_at", "start_at", "end_at", "duration_seconds", "meeting_url",
        "external_url", "crm_association", "owner_user_id", "host_user_id",
    ],
}  # fmt: skip

NOT_STORED = {
    "media_url", "transcript", "companies", "contacts", "owner", "action_items", "signals",
    "tags", "participants",
}  # fmt: skip

TOP_LEVEL = [
    "event_id", "op", "ts_ms", "source", "id", "updated_at", "updated_at_us", "before", "after",
    "unknown_fields",
]  # fmt: skip


def raw(resource: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / f"{resource}.avsc").read_text("utf-8"))
    return loaded


def field(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    for candidate in record["fields"]:
        if candidate["name"] == name:
            return candidate  # type: ignore[no-any-return]
    raise KeyError(name)


def named_types(schema: Any) -> Iterator[Mapping[str, Any]]:
    """Every named type definition (record/enum/fixed) inside an unparsed schema."""
    if isinstance(schema, list):
        for branch in schema:
            yield from named_types(branch)
    elif isinstance(schema, Mapping):
        if schema.get("type") in ("record", "enum", "fixed"):
            yield schema
        for sub in schema.get("fields", []):
            yield from named_types(sub["type"])
        for key in ("items", "values"):
            if key in schema:
                yield from named_types(schema[key])


def test_exactly_the_five_resource_files_exist() -> None:
    assert sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc")) == sorted(schemas.RESOURCES)


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_each_file_parses_alone(resource: str) -> None:
    # A fresh name table: the file must define every named type it uses (self-contained),
    # so it can be registered alone under <topic>-value.
    named: dict[str, Any] = {}
    parsed = fastavro.parse_schema(raw(resource), named_schemas=named)
    assert isinstance(parsed, dict)
    assert parsed["name"] == f"ai.askelephant.events.{RECORD_NAMES[resource]}ChangeEvent"
    assert [f["name"] for f in parsed["fields"]] == TOP_LEVEL


def test_the_parser_would_notice_a_missing_definition() -> None:
    broken = raw("tags")
    field(broken, "before")["type"] = ["null", "ai.askelephant.events.tag.Tag"]
    with pytest.raises(fastavro.schema.UnknownType):
        fastavro.parse_schema(broken)


def test_named_types_are_unique_across_files() -> None:
    # Distinct namespaces per resource: all five can be fed to one code generator.
    seen: dict[str, str] = {}
    for resource in schemas.RESOURCES:
        namespace = "ai.askelephant.events"
        for named in named_types(raw(resource)):
            namespace = named.get("namespace", namespace)
            fullname = named["name"] if "." in named["name"] else f"{namespace}.{named['name']}"
            assert fullname not in seen, f"{fullname} in {resource} and {seen.get(fullname)}"
            seen[fullname] = resource


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_after_has_every_documented_field_and_nothing_temporary(resource: str) -> None:
    record = schemas.record_schema(resource)
    names = [f["name"] for f in record["fields"]]
    assert names == AFTER_FIELDS[resource]
    assert not NOT_STORED & set(names)
    assert record["name"].endswith("." + RECORD_NAMES[resource])


def _assert_all_optional(record: Mapping[str, Any], path: str, allow_required: set[str]) -> int:
    checked = 0
    for sub in record["fields"]:
        here = f"{path}.{sub['name']}"
        if sub["name"] in allow_required:
            assert sub["type"] == "string", here
            continue
        kind = sub["type"]
        assert isinstance(kind, list), f"{here} is not a union"
        assert kind[0] == "null", f"{here}: null must be the first branch (default null)"
        assert "default" in sub, f"{here} has no default"
        assert sub["default"] is None, f"{here} default is not null"
        checked += 1
        for branch in kind[1:]:
            if isinstance(branch, Mapping) and branch["type"] == "record":
                checked += _assert_all_optional(branch, here, set())
            if isinstance(branch, Mapping) and branch["type"] == "array":
                items = branch["items"]
                assert isinstance(items, Mapping), here
                assert items["type"] == "record", here
                checked += _assert_all_optional(items, here + "[]", set())
    return checked


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_every_field_of_after_except_id_is_nullable_with_default_null(resource: str) -> None:
    # So a reader with a newer or older schema can always fill in a missing field.
    checked = _assert_all_optional(schemas.record_schema(resource), resource, {"id"})
    assert checked >= len(AFTER_FIELDS[resource]) - 1


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_envelope_types(resource: str) -> None:
    event = schemas.event_schema(resource)
    types = {f["name"]: f["type"] for f in event["fields"]}
    assert types["event_id"] == types["op"] == types["id"] == types["updated_at"] == "string"
    assert types["ts_ms"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert types["updated_at_us"] == {"type": "long", "logicalType": "timestamp-micros"}
    assert types["unknown_fields"] == ["null", "string"]
    assert types["before"][0] == types["after"][0] == "null"
    source = types["source"]
    assert [f["name"] for f in source["fields"]] == [
        "system", "resource", "api_version", "run_id", "snapshot", "producer_id",
    ]  # fmt: skip
    assert field(source, "api_version")["type"] == ["null", "string"]
    assert field(source, "snapshot")["type"] == "boolean"
    for name in ("before", "after", "unknown_fields"):
        assert field(event, name)["default"] is None


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_loader_returns_the_files(resource: str) -> None:
    text = (SCHEMA_DIR / f"{resource}.avsc").read_text("utf-8")
    # Stripped: the text the AvroSerializer looks up must equal the text registered.
    assert schemas.schema_str(resource) == text.strip()
    first = schemas.load_schema(resource)
    first["fields"].clear()
    assert schemas.load_schema(resource) == json.loads(text)  # a fresh copy every time
    assert schemas.event_schema(resource) is schemas.event_schema(resource)  # cached


@pytest.mark.parametrize("resource", schemas.RESOURCES)
def test_consumer_docs_list_every_field(resource: str) -> None:
    docs = (ROOT / "docs" / "events.md").read_text("utf-8")
    row = next(line for line in docs.splitlines() if line.startswith(f"| {resource} ("))
    for name in AFTER_FIELDS[resource]:
        assert f"`{name}`" in row, name
    for name in TOP_LEVEL:
        assert f"| `{name}` |" in docs, name


def test_unknown_resource_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown resource"):
        schemas.schema_str("meetings")


def test_found_from_the_checkout() -> None:
    assert Path(str(schemas.schema_dir().joinpath("contacts.avsc"))).resolve() == (
        SCHEMA_DIR / "contacts.avsc"
    )


_PROBE = """
import sys
from producer import schemas
try:
    found = schemas.schema_dir()
except schemas.SchemaNotFoundError as exc:
    print("MISSING", exc)
    sys.exit(0)
print("FOUND", found)
print(schemas.event_schema("engagements")["name"])
"""


def _fake_install(tmp_path: Path, *, with_data: bool) -> subprocess.CompletedProcess[str]:
    """An installed layout: site/producer/{__init__,schemas}.py (+ _schemas/*.avsc)."""
    package = tmp_path / "site" / "producer"
    package.mkdir(parents=True)
    for name in ("__init__.py", "schemas.py"):
        shutil.copy(ROOT / "producer" / name, package / name)
    # a stray "schemas" directory beside the package, as another distribution might install
    (tmp_path / "site" / "schemas").mkdir()
    shutil.copy(SCHEMA_DIR / "contacts.avsc", tmp_path / "site" / "schemas" / "contacts.avsc")
    if with_data:
        (package / "_schemas").mkdir()
        for avsc in SCHEMA_DIR.glob("*.avsc"):
            shutil.copy(avsc, package / "_schemas" / avsc.name)
    # PYTHONPATH comes before the editable install's finder, so this copy is imported.
    return subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_found_in_an_installed_package(tmp_path: Path) -> None:
    result = _fake_install(tmp_path, with_data=True)
    lines = result.stdout.splitlines()
    assert lines[0] == f"FOUND {tmp_path / 'site' / 'producer' / '_schemas'}", result.stdout
    assert lines[1] == "ai.askelephant.events.EngagementChangeEvent"


def test_missing_package_data_is_a_clear_error(tmp_path: Path) -> None:
    result = _fake_install(tmp_path, with_data=False)
    assert result.stdout.startswith("MISSING Avro schemas not found; looked in package data:")
    # site/ has no pyproject.toml, so a stray "schemas" directory beside it is not used
    assert "source checkout" not in result.stdout

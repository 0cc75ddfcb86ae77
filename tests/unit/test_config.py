import logging

import pytest

from producer.config import OPTION_NAMES, ConfigError, load_settings

KEY = "sk-apik_abc.s3cr3tvalue"


def env(**kw: str) -> dict[str, str]:
    return {"ASKELEPHANT_API_KEY": KEY, **kw}


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings(env())
    assert s.api_url == "https://app.askelephant.ai/api"
    assert s.topic_for("contacts") == "askelephant.contacts"
    assert s.checkpoint_topic == "askelephant.checkpoints"
    assert s.resources == ("contacts", "companies", "users", "tags", "engagements")
    assert (s.page_size, s.poll_interval_seconds, s.metrics_port) == (100, 60.0, 9108)
    assert s.require_credentials().authorization_header() == KEY  # raw key, no Bearer


def test_access_token_is_sent_as_bearer() -> None:
    s = load_settings({"ASKELEPHANT_ACCESS_TOKEN": "tok123"})
    assert s.require_credentials().authorization_header() == "Bearer tok123"


def test_missing_credentials_name_the_variable() -> None:
    s = load_settings({})
    with pytest.raises(ConfigError, match="ASKELEPHANT_API_KEY"):
        s.require_credentials()


def test_both_credentials_are_refused_without_leaking_them() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env(ASKELEPHANT_ACCESS_TOKEN="tok-secret-xyz"))
    assert "tok-secret-xyz" not in str(info.value)
    assert "s3cr3tvalue" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PAGE_SIZE", "0"),
        ("PAGE_SIZE", "101"),
        ("PAGE_SIZE", "many"),
        ("POLL_INTERVAL_SECONDS", "-1"),
        ("RESOURCES", "contacts,deals"),
        ("RESOURCES", " , "),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "LOUD"),
        ("SCHEMA_REGISTRY_URL", "localhost:8081"),
        ("TOPIC_PREFIX", "has space"),
        ("TOPIC_PARTITIONS", "0"),
        ("METRICS_PORT", "70000"),
    ],
)
def test_invalid_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env(**{name: value}))


def test_kafka_properties_pass_through_and_secrets_are_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = load_settings(
        env(
            KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            KAFKA_SASL_PASSWORD="hunter2-kafka",
            KAFKA_BOOTSTRAP_SERVERS="b1:9093",
        )
    )
    conf = s.kafka_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.password"] == "hunter2-kafka"
    assert conf["bootstrap.servers"] == "b1:9093"
    assert "bootstrap.servers" not in s.kafka_properties
    from producer.observability.logging import redact

    assert "hunter2-kafka" not in redact("password is hunter2-kafka")
    assert "s3cr3tvalue" not in redact(f"key {KEY}")
    assert "s3cr3tvalue" not in repr(s)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %r", s)
    assert "s3cr3tvalue" not in caplog.text


def test_every_option_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = sorted(name for name in OPTION_NAMES if f"`{name}`" not in readme)
    assert missing == []

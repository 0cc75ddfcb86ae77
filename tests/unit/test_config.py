import logging

import pytest

from producer.config import OPTION_NAMES, ConfigError, load_settings, markdown_table

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
    # The README's reference is exactly the table the flags are built from.
    assert markdown_table() in readme


@pytest.mark.parametrize(
    "name",
    [
        "RESOURCES",
        "PAGE_SIZE",
        "SCHEMA_REGISTRY_URL",
        "CHECKPOINT_TOPIC",
        "KAFKA_BOOTSTRAP_SERVERS",
        "LOG_LEVEL",
        "MAX_MESSAGE_BYTES",
    ],
)
def test_an_empty_value_is_an_error_naming_the_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} is set but empty"):
        load_settings(env(**{name: ""}))
    with pytest.raises(ConfigError, match=f"{name} is set but empty"):
        load_settings(env(**{name: "  "}))


def test_empty_values_that_mean_something_are_accepted() -> None:
    s = load_settings(
        env(TOPIC_PREFIX="", DEAD_LETTER_TOPIC="", HEARTBEAT_TOPIC="", ASKELEPHANT_ACCESS_TOKEN="")
    )
    assert s.topic_for("tags") == "tags"
    assert s.dead_letter_topic == "dlq"
    assert s.heartbeat_topic is None


def test_a_fractional_page_size_must_be_a_whole_number() -> None:
    with pytest.raises(ConfigError, match=r"PAGE_SIZE must be a whole number, got '60\.5'"):
        load_settings(env(PAGE_SIZE="60.5"))


@pytest.mark.parametrize(
    "name", ["KAFKA_HOME", "KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_PORT", "KAFKA_PORT_9092_TCP"]
)
def test_stray_kafka_variables_are_ignored_with_a_warning_naming_them(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    value = "tcp://10.0.0.1:9092" if "PORT" in name else "-Xmx1G -Dsecret.value=zz9"
    s = load_settings(env(**{name: value, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}))
    assert s.ignored_kafka_variables == (name,)
    assert s.kafka_properties == {"security.protocol": "SASL_SSL"}
    assert all(not k.startswith(("home", "heap", "opts", "port")) for k in s.kafka_config())
    with caplog.at_level(logging.WARNING, logger="producer.config"):
        s.warn_ignored()
    assert name in caplog.text
    assert value not in caplog.text  # names only, never values


def test_a_value_librdkafka_refuses_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL"):
        load_settings(env(KAFKA_SECURITY_PROTOCOL="carrier-pigeon"))
    with pytest.raises(ConfigError, match=r"KAFKA_LINGER_MS.*linger\.ms"):
        load_settings(env(KAFKA_LINGER_MS="soon"))


def test_new_pipeline_options_have_their_documented_defaults() -> None:
    s = load_settings(env(TOPIC_PREFIX="p."))
    assert s.dead_letter_topic == "p.dlq"
    assert s.dead_letter_policy == "dead-letter"
    assert s.max_message_bytes_for("engagements") == 2_097_152
    assert s.dead_letter_max_message_bytes == 16_777_216
    assert s.liveness_stall_seconds == 900.0
    assert s.heartbeat_topic is None


def test_new_pipeline_options_are_parsed() -> None:
    s = load_settings(
        env(
            DEAD_LETTER_TOPIC="errors.dlq",
            DEAD_LETTER_POLICY="fail",
            MAX_MESSAGE_BYTES="1048576, engagements=8388608",
            DEAD_LETTER_MAX_MESSAGE_BYTES="4194304",
            LIVENESS_STALL_SECONDS="120",
            HEARTBEAT_TOPIC="askelephant.heartbeat",
        )
    )
    assert (s.dead_letter_topic, s.dead_letter_policy) == ("errors.dlq", "fail")
    assert s.max_message_bytes_for("engagements") == 8_388_608
    assert s.max_message_bytes_for("tags") == 1_048_576
    assert s.dead_letter_max_message_bytes == 4_194_304
    assert s.liveness_stall_seconds == 120.0
    assert s.heartbeat_topic == "askelephant.heartbeat"
    only_override = load_settings(env(MAX_MESSAGE_BYTES="engagements=8388608"))
    assert only_override.max_message_bytes_for("tags") == 2_097_152


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DEAD_LETTER_POLICY", "drop", "dead-letter"),
        ("DEAD_LETTER_TOPIC", "has space", "letters"),
        ("MAX_MESSAGE_BYTES", "2MB", "whole number"),
        ("MAX_MESSAGE_BYTES", "1048576,deals=5", "deals"),
        ("MAX_MESSAGE_BYTES", "1048576,2097152", "two defaults"),
        ("MAX_MESSAGE_BYTES", "1048576,tags=2000,tags=3000", "twice"),
        ("MAX_MESSAGE_BYTES", "5", "between"),
        ("DEAD_LETTER_MAX_MESSAGE_BYTES", "1.5", "whole number"),
        ("LIVENESS_STALL_SECONDS", "0", "between"),
        ("HEARTBEAT_TOPIC", "a/b", "letters"),
    ],
)
def test_invalid_pipeline_options_name_their_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        load_settings(env(**{name: value}))
    assert says in str(info.value)


def test_slicing_works_with_either_delivery() -> None:
    # a sliced export writes progress marks, so exactly-once gets a transaction per batch
    for delivery in ("at-least-once", "exactly-once"):
        assert load_settings(env(DELIVERY=delivery, BACKFILL_SLICES="4")).backfill_slices == 4

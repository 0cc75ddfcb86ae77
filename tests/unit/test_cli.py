import re
import sys

import pytest

from producer.cli import COMMAND_SETTINGS, main
from producer.config import SETTINGS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in SETTINGS:
        monkeypatch.delenv(option.env, raising=False)


def test_missing_key_exits_2_naming_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync"]) == 2
    assert "ASKELEPHANT_API_KEY" in capsys.readouterr().err


def test_invalid_flag_value_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--page-size", "500", "--askelephant-api-key", "sk-apik_a.b"]) == 2
    err = capsys.readouterr().err
    assert "PAGE_SIZE" in err
    assert "sk-apik_a.b" not in err


def test_every_setting_has_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert all(option.flag in out for option in SETTINGS)


@pytest.mark.parametrize("command", ["checkpoints", "reset", "dead-letters"])
def test_a_command_lists_only_the_settings_it_reads(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    shown = {o.env for o in SETTINGS if re.search(rf"{o.flag}\b(?!-)", out)}
    assert shown == COMMAND_SETTINGS[command]
    assert "--askelephant-api-key" not in out


def test_a_hidden_setting_still_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAGE_SIZE", "500")  # not a flag of checkpoints, still validated
    assert main(["checkpoints"]) == 2
    assert "PAGE_SIZE" in capsys.readouterr().err


def test_help_shows_the_defaults_of_the_readme_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "10000")  # argparse wraps inside words at hyphens
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for option in SETTINGS:
        shown = "(secret)" if option.secret else f"default: {option.shown_default.strip('`')}"
        assert f"[{shown}]" in text, option.env
    assert "(empty)" not in text


@pytest.mark.parametrize(
    "name", ["RESOURCES", "PAGE_SIZE", "SCHEMA_REGISTRY_URL", "CHECKPOINT_TOPIC"]
)
def test_an_empty_variable_exits_2_naming_it(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, "")
    assert main(["checkpoints"]) == 2
    assert f"{name} is set but empty" in capsys.readouterr().err


def test_a_fractional_page_size_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--page-size", "60.5"]) == 2
    assert "PAGE_SIZE must be a whole number" in capsys.readouterr().err


def test_a_reset_to_the_future_needs_force(capsys: pytest.CaptureFixture[str]) -> None:
    # Exit 2 before any broker is contacted (none runs at this address).
    args = ["--kafka-bootstrap-servers", "127.0.0.1:1", "--resources", "tags"]
    assert main(["reset", "--resource", "tags", "--to", "2099-01-01T00:00:00Z", *args]) == 2
    err = capsys.readouterr().err
    assert "in the future" in err
    assert "--force" in err


def test_simulator_not_installed_says_how_to_get_it_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A None entry in sys.modules makes the import raise ImportError, like a product-only
    # install (the product wheel does not carry the simulator).
    monkeypatch.setitem(sys.modules, "askelephant_simulator", None)
    monkeypatch.setitem(sys.modules, "askelephant_simulator.runner", None)
    assert main(["simulator", "--port", "0"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "pip install ./simulator" in lines[0]
    assert "askelephant-simulator" in lines[0]
    assert captured.out == ""


def test_simulator_help_names_the_real_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulator", "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: askelephant-kafka simulator ")
    assert "--records" in usage
    assert "askelephant-simulator" in usage


def test_the_command_list_names_the_separate_simulator_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "askelephant-simulator" in capsys.readouterr().out

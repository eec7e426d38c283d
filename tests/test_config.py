"""Settings: every source, and one clear line for every kind of mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from syncd.config import Secret, load_settings
from syncd.errors import ConfigError


def test_defaults_give_one_store_without_api() -> None:
    settings = load_settings({})
    assert settings.database_url == "sqlite:///syncd.db"
    assert list(settings.stores) == ["default"]
    store = settings.store()
    assert store.verify == "off" and not store.has_api and store.webhook_secret is None
    assert (settings.host, settings.port, settings.reconcile_interval) == ("127.0.0.1", 8080, 900)
    assert settings.max_body_bytes == 1_048_576


def test_api_key_turns_verification_on() -> None:
    settings = load_settings(
        {
            "SYNCD_API_URL": "https://api.example/v1/",
            "SYNCD_API_KEY": "sk_live_123",
            "SYNCD_STORE": "tienda",
        }
    )
    store = settings.store("tienda")
    assert store.api_url == "https://api.example/v1"
    assert store.api_key == Secret("sk_live_123")
    assert store.verify == "api"


def test_secrets_from_files_and_systemd_credentials(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("sk_from_file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "webhook_secret").write_text("hook-secret")
    settings = load_settings(
        {
            "SYNCD_API_URL": "https://api.example/v1",
            "SYNCD_API_KEY_FILE": str(tmp_path / "key"),
            "CREDENTIALS_DIRECTORY": str(creds),
        }
    )
    store = settings.store()
    assert store.api_key is not None and store.api_key.reveal() == "sk_from_file"
    assert store.webhook_secret is not None and store.webhook_secret.reveal() == "hook-secret"


def test_toml_with_several_stores(tmp_path: Path) -> None:
    (tmp_path / "b.key").write_text("key-b")
    config = tmp_path / "stores.toml"
    config.write_text(
        '[[stores]]\nname = "norte"\napi_url = "https://a.example/v1"\napi_key = "key-a"\n'
        'webhook_secret = "s-a"\n\n'
        f'[[stores]]\nname = "sur"\napi_url = "https://b.example/v1"\n'
        f'api_key_file = "{tmp_path / "b.key"}"\nverify = "off"\n'
    )
    settings = load_settings({"SYNCD_CONFIG": str(config), "SYNCD_STORE": "norte"})
    assert sorted(settings.stores) == ["norte", "sur"]
    assert settings.store("norte").verify == "api"
    sur = settings.store("sur")
    assert sur.verify == "off" and sur.api_key == Secret("key-b")


def test_secret_never_shows_itself() -> None:
    settings = load_settings(
        {
            "SYNCD_API_URL": "https://x.example",
            "SYNCD_API_KEY": "sk_hush",
            "SYNCD_WEBHOOK_SECRET": "wh_hush",
        }
    )
    text = repr(settings) + str(settings)
    assert "sk_hush" not in text and "wh_hush" not in text


MISTAKES = [
    ({"SYNCD_PORT": "eighty"}, "SYNCD_PORT", "whole number"),
    ({"SYNCD_PORT": "70000"}, "SYNCD_PORT", "between"),
    ({"SYNCD_RECONCILE_INTERVAL": "-5"}, "SYNCD_RECONCILE_INTERVAL", "at least"),
    ({"SYNCD_RECONCILE_INTERVAL": "soon"}, "SYNCD_RECONCILE_INTERVAL", "number"),
    ({"SYNCD_MAX_BODY_BYTES": "0"}, "SYNCD_MAX_BODY_BYTES", "at least"),
    ({"SYNCD_VERIFY": "maybe"}, "SYNCD_VERIFY", "'api' or 'off'"),
    ({"SYNCD_VERIFY": "api"}, "SYNCD_VERIFY", "needs an API"),
    ({"SYNCD_API_URL": "ftp://x"}, "SYNCD_API_URL", "http"),
    ({"SYNCD_API_URL": "https://x.example"}, "SYNCD_API_KEY", "together"),
    ({"SYNCD_API_KEY": "k"}, "SYNCD_API_URL", "together"),
    (
        {"SYNCD_API_URL": "https://x.example/v1?key=k", "SYNCD_API_KEY": "k"},
        "SYNCD_API_URL",
        "the API key goes in SYNCD_API_KEY",
    ),
    (
        {"SYNCD_API_URL": "https://x.example/v1", "SYNCD_API_KEY": "two words"},
        "SYNCD_API_KEY",
        "whitespace",
    ),
    ({"SYNCD_API_KEY_FILE": "/nonexistent/key"}, "SYNCD_API_KEY_FILE", "cannot read"),
    ({"SYNCD_API_KEY": "a", "SYNCD_API_KEY_FILE": "/x"}, "SYNCD_API_KEY", "not both"),
    ({"SYNCD_STORE": "bad name!"}, "SYNCD_STORE", "letters"),
    ({"SYNCD_CONFIG": "/nonexistent.toml"}, "SYNCD_CONFIG", "cannot read"),
]


@pytest.mark.parametrize(("env", "variable", "words"), MISTAKES)
def test_each_mistake_names_its_variable(env: dict[str, str], variable: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert words in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("not toml [[[", "not valid TOML"),
        ("[[stores]]\napi_url = 'https://x.example'\napi_key = 'k'\n", "needs a name"),
        ("[[stores]]\nname = 'a'\napi_url = 'https://x.example'\n", "together"),
        ("[[stores]]\nname = 'a'\nverify = 'api'\n", "needs an API"),
        ("[[stores]]\nname = 'a'\nflavour = 'x'\n", "unknown key"),
        ("[[stores]]\nname = 'a'\n[[stores]]\nname = 'a'\n", "defined twice"),
        ("stores = 3\n", "[[stores]]"),
        ("[[stores]]\nname = 'a'\napi_key = 'sk_toml_secret'\n", "together"),
    ],
)
def test_toml_mistakes(tmp_path: Path, toml: str, words: str) -> None:
    path = tmp_path / "stores.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings({"SYNCD_CONFIG": str(path)})
    message = str(caught.value)
    assert message.startswith("SYNCD_CONFIG") and words in message and "\n" not in message
    assert "sk_toml_secret" not in message


def test_cli_prints_one_line_and_fails(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "status"],
        env={
            "SYNCD_PORT": "x",
            "PATH": "/usr/bin:/bin",
            "SYNCD_API_KEY": "sk_cli_secret",
            "SYNCD_API_URL": "https://x.example",
        },
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "syncd: SYNCD_PORT: expected a whole number, got 'x'"
    ]
    assert "Traceback" not in result.stderr and "sk_cli_secret" not in result.stderr


# --- the store's time zone ---------------------------------------------------------


def test_timezone_defaults_to_mexico_city_and_is_per_store(tmp_path: Path) -> None:
    assert load_settings({}).store().timezone == "America/Mexico_City"
    assert load_settings({"SYNCD_TIMEZONE": " America/Tijuana "}).store().timezone == (
        "America/Tijuana"
    )
    config = tmp_path / "stores.toml"
    config.write_text(
        '[[stores]]\nname = "norte"\ntimezone = "America/Tijuana"\n\n[[stores]]\nname = "sur"\n'
    )
    settings = load_settings({"SYNCD_CONFIG": str(config)})
    assert settings.store("norte").timezone == "America/Tijuana"
    assert settings.store("sur").timezone == "America/Mexico_City"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("America/Atlantis", "unknown time zone 'America/Atlantis'"),
        ("-06:00", "'-06:00' is a fixed offset, not a time zone name"),
        ("UTC-6", "fixed offset"),
        ("+0530", "fixed offset"),
        ("../../etc/passwd", "unknown time zone"),
        ("America", "unknown time zone"),
    ],
)
def test_a_bad_timezone_is_one_line_naming_the_variable(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SYNCD_TIMEZONE": value})
    message = str(caught.value)
    assert message.startswith("SYNCD_TIMEZONE: ") and words in message and "\n" not in message


def test_a_bad_timezone_in_toml_names_the_store(tmp_path: Path) -> None:
    config = tmp_path / "stores.toml"
    config.write_text('[[stores]]\nname = "norte"\ntimezone = "-06:00"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings({"SYNCD_CONFIG": str(config)})
    assert str(caught.value).startswith("SYNCD_CONFIG store 'norte' timezone: ")


def test_syncd_timezone_only_for_the_store_configured_by_variables(tmp_path: Path) -> None:
    config = tmp_path / "stores.toml"
    config.write_text('[[stores]]\nname = "norte"\n')
    for env in (
        {"SYNCD_CONFIG": str(config), "SYNCD_TIMEZONE": "America/Tijuana"},
        {"SYNCD_CONFIG": str(config), "SYNCD_STORE": "norte", "SYNCD_TIMEZONE": "UTC"},
    ):
        with pytest.raises(ConfigError) as caught:
            load_settings(env)
        assert str(caught.value).startswith("SYNCD_TIMEZONE: ")


def test_zones_work_without_system_zone_files(tmp_path: Path) -> None:
    # No zone files on the search path: the tzdata package must stand in.
    code = (
        "from syncd.config import load_settings; from syncd import localtime; "
        "import datetime as d; "
        "s = load_settings({'SYNCD_TIMEZONE': 'America/Tijuana'}).store(); "
        "at = d.datetime(2026, 7, 2, 6, 59, tzinfo=d.UTC); "
        "print(localtime.local(at, localtime.zone(s.timezone))[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONTZPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "2026-07-01 23:59:00"), result.stderr


@pytest.mark.parametrize(
    ("store", "key", "words"),
    [
        ("api_url = 'https://u:p@x.example/v1'\napi_key = 'k'", "api_url", "goes in SYNCD_CONFIG"),
        ("api_url = 'https://x.example/v1'\napi_key = 'sk\tx'", "api_key", "whitespace"),
    ],
)
def test_api_access_from_toml_is_checked_at_load_naming_its_key(
    tmp_path: Path, store: str, key: str, words: str
) -> None:
    path = tmp_path / "stores.toml"
    path.write_text(f"[[stores]]\nname = 'shop'\n{store}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"SYNCD_CONFIG": str(path)})
    assert caught.value.variable == f"SYNCD_CONFIG store 'shop' {key}"
    assert words in caught.value.problem
    assert "sk" not in caught.value.problem and "u:p" not in str(caught.value)

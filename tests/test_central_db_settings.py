"""Central settings: defaults for development, refusals for unsafe production settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.settings import Settings, SettingsError

PRODUCTION = {
    "M2C_ENV": "production",
    "M2C_DATABASE_URL": "postgresql+psycopg://central:s3cret-long@db.example/central",
    "M2C_BROKER_URL": "mqtts://broker.example:8883",
    "M2C_SECRET_KEY": "a-long-random-value-from-the-vault",
    "M2C_COMMAND_KEY_PATH": "/etc/meter2cash/command.key",
    "M2C_DEVICE_CA_KEY_PATH": "/etc/meter2cash/device-ca.key",
    "M2C_DEVICE_CA_CERT_PATH": "/etc/meter2cash/device-ca.pem",
}


def test_development_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.env == "development"
    assert settings.database_url == "sqlite:///./central.sqlite3"
    assert settings.broker_url == "mqtt://127.0.0.1:1883"
    assert settings.command_key_path == Path("./keys/central-command.key")
    assert not settings.is_production


def test_complete_production_settings_are_accepted() -> None:
    settings = Settings.from_env(PRODUCTION)
    assert settings.is_production
    assert settings.database_url == PRODUCTION["M2C_DATABASE_URL"]


def test_postgres_without_a_password_part_is_accepted() -> None:
    """Peer or certificate authentication: no password in the URL at all."""
    env = {**PRODUCTION, "M2C_DATABASE_URL": "postgresql+psycopg://central@/central"}
    assert Settings.from_env(env).database_url.endswith("/central")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("M2C_SECRET_KEY", "changethis", "M2C_SECRET_KEY"),
        ("M2C_SECRET_KEY", "", "M2C_SECRET_KEY"),
        ("M2C_DATABASE_URL", "postgresql://central:changethis@db/central", "password"),
        ("M2C_DATABASE_URL", "postgresql://central:@db/central", "password"),
        ("M2C_BROKER_URL", "mqtt://broker.example:1883", "TLS"),
        ("M2C_BROKER_URL", "mqtts://u:changethis@broker.example", "default password"),
        ("M2C_COMMAND_KEY_PATH", "", "M2C_COMMAND_KEY_PATH"),
    ],
)
def test_production_refuses_default_or_empty_secrets(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        Settings.from_env({**PRODUCTION, variable: value})
    assert "refusing to start in production" in str(caught.value)


def test_production_lists_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"M2C_ENV": "production"})
    text = str(caught.value)
    for name in ("M2C_SECRET_KEY", "M2C_BROKER_URL", "M2C_COMMAND_KEY_PATH"):
        assert name in text


def test_development_allows_default_secrets() -> None:
    assert Settings.from_env({"M2C_SECRET_KEY": "changethis"}).secret_key == "changethis"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"M2C_ENV": "staging"}, "M2C_ENV"),
        ({"M2C_DATABASE_URL": ""}, "M2C_DATABASE_URL is empty"),
        ({"M2C_DATABASE_URL": "central.sqlite3"}, "not a URL"),
        ({"M2C_BROKER_URL": ""}, "M2C_BROKER_URL"),
    ],
)
def test_malformed_settings_are_refused_everywhere(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)

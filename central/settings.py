"""Central's settings, read once from ``M2C_*`` environment variables.

One URL picks the database (SQLite file by default, PostgreSQL in production). Outside
``development`` the settings refuse to start with a default or empty secret: a utility that
forgets to set one must find out at start-up, not after a breach (the rule of the FastAPI
full-stack template's ``_check_default_secret``).

Variables (default in brackets):

* ``M2C_ENV`` — ``development`` or ``production`` [development]
* ``M2C_DATABASE_URL`` — SQLAlchemy URL of the central database [sqlite:///./central.sqlite3]
* ``M2C_BROKER_URL`` — MQTT broker, ``mqtts://`` in production [mqtt://127.0.0.1:1883]
* ``M2C_SECRET_KEY`` — signs API sessions [changethis]
* ``M2C_COMMAND_KEY_PATH`` — central's Ed25519 key that signs commands
  [./keys/central-command.key]
* ``M2C_DEVICE_CA_KEY_PATH`` — device CA key that issues gateway certificates
  [./keys/device-ca.key]
* ``M2C_DEVICE_CA_CERT_PATH`` — the device CA certificate [./keys/device-ca.pem]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

__all__ = ["DEFAULT_SECRET", "ENVIRONMENTS", "Settings", "SettingsError"]

#: The placeholder every default secret carries, so a forgotten one is easy to spot.
DEFAULT_SECRET: Final = "changethis"
ENVIRONMENTS: Final = ("development", "production")

Environment = Literal["development", "production"]

_DEFAULTS: Final[dict[str, str]] = {
    "M2C_ENV": "development",
    "M2C_DATABASE_URL": "sqlite:///./central.sqlite3",
    "M2C_BROKER_URL": "mqtt://127.0.0.1:1883",
    "M2C_SECRET_KEY": DEFAULT_SECRET,
    "M2C_COMMAND_KEY_PATH": "./keys/central-command.key",
    "M2C_DEVICE_CA_KEY_PATH": "./keys/device-ca.key",
    "M2C_DEVICE_CA_CERT_PATH": "./keys/device-ca.pem",
}


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe for the environment; the message names
    the variable and says what to do."""


@dataclass(frozen=True, slots=True)
class Settings:
    env: Environment
    database_url: str
    broker_url: str
    secret_key: str
    command_key_path: Path
    device_ca_key_path: Path
    device_ca_cert_path: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default: the process environment), checked."""
        source = os.environ if environ is None else environ

        def get(name: str) -> str:
            value = source.get(name)
            return _DEFAULTS[name] if value is None else value.strip()

        env = get("M2C_ENV").lower()
        if env not in ENVIRONMENTS:
            raise SettingsError(f"M2C_ENV={env!r}: expected one of {', '.join(ENVIRONMENTS)}")
        settings = cls(
            env=env,  # type: ignore[arg-type]  # checked just above
            database_url=get("M2C_DATABASE_URL"),
            broker_url=get("M2C_BROKER_URL"),
            secret_key=get("M2C_SECRET_KEY"),
            command_key_path=Path(get("M2C_COMMAND_KEY_PATH")),
            device_ca_key_path=Path(get("M2C_DEVICE_CA_KEY_PATH")),
            device_ca_cert_path=Path(get("M2C_DEVICE_CA_CERT_PATH")),
        )
        settings.check(source)
        return settings

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def check(self, environ: Mapping[str, str] | None = None) -> None:
        """Refuse unusable values everywhere and default secrets outside development.

        ``environ`` tells which key paths were set explicitly: in production a key file
        must be named on purpose, never found at a default path by accident.
        """
        if not self.database_url:
            raise SettingsError("M2C_DATABASE_URL is empty: set a SQLAlchemy database URL")
        if "://" not in self.database_url:
            raise SettingsError(
                f"M2C_DATABASE_URL={self.database_url!r} is not a URL "
                "(e.g. sqlite:///./central.sqlite3 or postgresql+psycopg://user:pw@host/db)"
            )
        if not self.broker_url:
            raise SettingsError("M2C_BROKER_URL is empty: set the MQTT broker URL")
        if not self.is_production:
            return
        problems: list[str] = []
        if self.secret_key in ("", DEFAULT_SECRET):
            problems.append("M2C_SECRET_KEY is empty or the default: set a long random value")
        password = _url_password(self.database_url)
        if not self.database_url.startswith("sqlite") and password in ("", DEFAULT_SECRET):
            problems.append(
                "M2C_DATABASE_URL has an empty or default password: "
                "use a real password (or a passwordless socket/peer-auth URL without ':')"
            )
        if _url_password(self.broker_url) == DEFAULT_SECRET:
            problems.append("M2C_BROKER_URL carries the default password")
        if urlsplit(self.broker_url).scheme not in ("mqtts", "ssl"):
            problems.append("M2C_BROKER_URL must use TLS (mqtts://) in production")
        explicit = {} if environ is None else environ
        for name in ("M2C_COMMAND_KEY_PATH", "M2C_DEVICE_CA_KEY_PATH", "M2C_DEVICE_CA_CERT_PATH"):
            if not explicit.get(name, "").strip():
                problems.append(f"{name} is not set: name the key file explicitly")
        if problems:
            raise SettingsError(
                "refusing to start in production with unsafe settings:\n  - "
                + "\n  - ".join(problems)
            )


def _url_password(url: str) -> str | None:
    """The password in ``url``: None when the URL has no ``user:password@`` part."""
    parts = urlsplit(url)
    if parts.username is None or ":" not in (parts.netloc.rsplit("@", 1)[0]):
        return None
    return parts.password or ""

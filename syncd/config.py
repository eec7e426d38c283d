"""Settings: one typed object built once at start-up and passed down.

Sources, in order of precedence for a secret: ``SYNCD_X`` itself, then
``SYNCD_X_FILE`` (a path), then ``$CREDENTIALS_DIRECTORY/<name>`` (systemd
``LoadCredential=``). Several stores come from the TOML file named by
``SYNCD_CONFIG``; the variables configure the one store named ``SYNCD_STORE``.

Every mistake raises :class:`ConfigError` whose text is one line naming the
variable. A secret's value is never put in a message or a repr.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from syncd.errors import ConfigError
from syncd.vocabulary import VerifyMode

DEFAULT_DATABASE_URL = "sqlite:///syncd.db"
DEFAULT_TIMEZONE = "America/Mexico_City"  # the store's clock unless configured
STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_API_CONCURRENCY = 4
MAX_API_CONCURRENCY = 64
#: Tries to apply an event before it is marked failed (SYNCD_MAX_ATTEMPTS).
DEFAULT_MAX_ATTEMPTS = 8


class Secret:
    """A string that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class StoreConfig:
    name: str
    api_url: str | None = None
    api_key: Secret | None = None
    webhook_secret: Secret | None = None
    verify: VerifyMode = VerifyMode.OFF
    timezone: str = DEFAULT_TIMEZONE  # IANA zone name of the store's own clock
    api_concurrency: int = 4  # API list requests in flight while paging (backfill, reconcile)

    @property
    def has_api(self) -> bool:
        return self.api_url is not None and self.api_key is not None


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    stores: dict[str, StoreConfig] = field(default_factory=dict)
    default_store: str = "default"
    host: str = "127.0.0.1"
    port: int = 8080
    reconcile_interval: float = 900.0
    reconcile_lookback: float = 2 * 3600.0
    event_retention: float = 30 * 86400.0
    max_body_bytes: int = 1_048_576
    body_timeout: float = 10.0
    worker_batch_size: int = 500
    worker_poll_interval: float = 2.0
    worker_linger: float = 0.05
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    verify_concurrency: int = 16
    shutdown_grace: float = 20.0
    log_level: str = "INFO"
    # Outage bounds: how much of the daemon's resources background work and slow clients may take.
    reconcile_concurrency: int = 2
    commit_timeout: float = 10.0
    header_timeout: float = 10.0
    keepalive_timeout: int = 5

    def secrets(self) -> list[str]:
        """Every secret value, for the log scrubber."""
        return [
            secret.reveal()
            for store in self.stores.values()
            for secret in (store.api_key, store.webhook_secret)
            if secret is not None
        ]

    def store(self, name: str | None = None) -> StoreConfig:
        key = name or self.default_store
        try:
            return self.stores[key]
        except KeyError:
            known = ", ".join(sorted(self.stores)) or "none"
            raise ConfigError("--store", f"unknown store {key!r} (configured: {known})") from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``environ`` (default: ``os.environ``)."""
    env = _Env(os.environ if environ is None else environ)
    default_store = env.text("SYNCD_STORE") or "default"
    if not STORE_NAME.match(default_store):
        raise ConfigError("SYNCD_STORE", "use letters, digits, '_', '.' or '-' (at most 64)")

    stores = _stores(env, default_store)
    return Settings(
        database_url=env.text("SYNCD_DATABASE_URL") or DEFAULT_DATABASE_URL,
        stores=stores,
        default_store=default_store,
        host=env.text("SYNCD_HOST") or "127.0.0.1",
        port=env.integer("SYNCD_PORT", 8080, low=0, high=65535),
        reconcile_interval=env.number("SYNCD_RECONCILE_INTERVAL", 900.0, low=0),
        reconcile_lookback=env.number("SYNCD_RECONCILE_LOOKBACK", 7200.0, low=0),
        event_retention=env.number("SYNCD_EVENT_RETENTION", 30 * 86400.0, low=1),
        max_body_bytes=env.integer("SYNCD_MAX_BODY_BYTES", 1_048_576, low=1),
        body_timeout=env.number("SYNCD_BODY_TIMEOUT", 10.0, low=0.1),
        worker_batch_size=env.integer("SYNCD_WORKER_BATCH_SIZE", 500, low=1, high=10_000),
        max_attempts=env.integer("SYNCD_MAX_ATTEMPTS", 8, low=1, high=1000),
        verify_concurrency=env.integer("SYNCD_VERIFY_CONCURRENCY", 16, low=1, high=256),
        shutdown_grace=env.number("SYNCD_SHUTDOWN_GRACE", 20.0, low=0),
        log_level=_log_level(env.text("SYNCD_LOG_LEVEL")),
        # Outage bounds.
        reconcile_concurrency=env.integer("SYNCD_RECONCILE_CONCURRENCY", 2, low=1, high=64),
        commit_timeout=env.number("SYNCD_COMMIT_TIMEOUT", 10.0, low=0.1),
        header_timeout=env.number("SYNCD_HEADER_TIMEOUT", 10.0, low=0.1),
        keepalive_timeout=env.integer("SYNCD_KEEPALIVE_TIMEOUT", 5, low=1, high=3600),
    )


def _stores(env: _Env, default_store: str) -> dict[str, StoreConfig]:
    """The stores of ``SYNCD_CONFIG``'s file, and ``default_store`` made of
    the per-store variables (unless the file configures it, or only the file
    is used)."""
    stores: dict[str, StoreConfig] = {}
    config_path = env.text("SYNCD_CONFIG")
    if config_path:
        stores.update(_stores_from_toml(Path(config_path), env))

    api_url = env.url("SYNCD_API_URL")
    api_key = env.secret("SYNCD_API_KEY", "api_key")
    if (api_url is None) != (api_key is None):
        missing = "SYNCD_API_KEY" if api_key is None else "SYNCD_API_URL"
        raise ConfigError(missing, "SYNCD_API_URL and SYNCD_API_KEY must be set together")
    _check_api("SYNCD_API_URL", "SYNCD_API_KEY", api_url, api_key)
    webhook_secret = env.secret("SYNCD_WEBHOOK_SECRET", "webhook_secret")
    verify = _verify_mode("SYNCD_VERIFY", env.text("SYNCD_VERIFY"), has_key=api_key is not None)
    api_concurrency = env.integer(
        "SYNCD_API_CONCURRENCY", DEFAULT_API_CONCURRENCY, low=1, high=MAX_API_CONCURRENCY
    )
    env_store = StoreConfig(
        default_store, api_url, api_key, webhook_secret, verify, api_concurrency=api_concurrency
    )
    env_store = _with_env_timezone(env_store, env, from_toml=default_store in stores)
    if default_store in stores:
        if api_url or webhook_secret or env.text("SYNCD_VERIFY"):
            raise ConfigError(
                "SYNCD_STORE",
                f"store {default_store!r} is configured both in SYNCD_CONFIG and by variables",
            )
    elif not config_path or api_url or webhook_secret:
        stores[default_store] = env_store
    elif env.text("SYNCD_TIMEZONE"):
        raise ConfigError(
            "SYNCD_TIMEZONE", "no store is configured by variables: set timezone in SYNCD_CONFIG"
        )
    return stores


def _log_level(value: str | None) -> str:
    if value is None:
        return "INFO"
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            "SYNCD_LOG_LEVEL", f"expected DEBUG, INFO, WARNING or ERROR, got {value!r}"
        )
    return level


def _verify_mode(variable: str, value: str | None, *, has_key: bool) -> VerifyMode:
    if value is None or value == "":
        return VerifyMode.API if has_key else VerifyMode.OFF
    if value not in tuple(VerifyMode):
        raise ConfigError(variable, f"expected 'api' or 'off', got {value!r}")
    if value == VerifyMode.API and not has_key:
        raise ConfigError(variable, "'api' needs an API URL and key for the store")
    return VerifyMode(value)


class _Env:
    """Typed reads of variables; each failure names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
        _check_range(name, value, low, high)
        return value

    def number(self, name: str, default: float, *, low: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"expected a number of seconds, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(name, f"expected a finite number, got {raw!r}")
        _check_range(name, value, low, None)
        return value

    def url(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        return _check_url(name, raw)

    def secret(self, name: str, credential: str) -> Secret | None:
        """``NAME``, else the file named by ``NAME_FILE``, else the systemd credential."""
        direct = self.text(name)
        path = self.text(f"{name}_FILE")
        if direct is not None and path is not None:
            raise ConfigError(name, f"set either {name} or {name}_FILE, not both")
        if direct is not None:
            return Secret(direct)
        if path is not None:
            return _read_secret_file(f"{name}_FILE", Path(path))
        creds = self.text("CREDENTIALS_DIRECTORY")
        if creds is not None and (Path(creds) / credential).is_file():
            return _read_secret_file(name, Path(creds) / credential)
        return None


def _check_range(name: str, value: float, low: float, high: float | None) -> None:
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(name, f"must be {bound}, got {value}")


def api_url_problem(raw: str, key_name: str = "SYNCD_API_KEY") -> str | None:
    """What is wrong with a store's API base URL, or None. Checked once when
    the settings load (the error names where the URL came from) and again by
    a client made directly."""
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, TypeError):
        return "is not a URL"
    if url.scheme not in ("http", "https") or not url.host:
        return "must be an absolute http(s) URL such as https://host/v1"
    if url.userinfo or url.query or url.fragment:
        return f"must not carry credentials, a query or a fragment; the API key goes in {key_name}"
    return None


def api_key_problem(key: str) -> str | None:
    """What is wrong with an API key, or None; never the key itself."""
    if not isinstance(key, str) or not key:
        return "is empty"
    if any(not ch.isprintable() or ch.isspace() for ch in key) or not key.isascii():
        return "contains whitespace, control or non-ASCII characters (a stray newline in the file?)"
    return None


def _check_api(url_name: str, key_name: str, url: str | None, key: Secret | None) -> None:
    """A store's API access, validated where it was configured."""
    url_problem = api_url_problem(url, key_name) if url is not None else None
    if url_problem is not None:
        raise ConfigError(url_name, url_problem)
    key_problem = api_key_problem(key.reveal()) if key is not None else None
    if key_problem is not None:
        raise ConfigError(key_name, key_problem)


def _check_url(name: str, raw: str) -> str:
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ConfigError(name, f"expected an http(s):// URL, got {raw!r}")
    return raw.rstrip("/")


def _read_secret_file(name: str, path: Path) -> Secret:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(name, f"cannot read {path}: {exc.strerror or exc}") from None
    if not value:
        raise ConfigError(name, f"{path} is empty")
    return Secret(value)


def _stores_from_toml(path: Path, env: _Env) -> dict[str, StoreConfig]:
    where = "SYNCD_CONFIG"
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(where, f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, f"{path} is not valid TOML: {exc}") from None
    unknown = set(document) - {"stores"}
    if unknown:
        raise ConfigError(where, f"{path}: unknown top-level key(s) {sorted(unknown)}")
    tables = document.get("stores", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(where, f"{path}: expected one or more [[stores]] tables")
    stores: dict[str, StoreConfig] = {}
    for index, table in enumerate(tables):
        store = _store_from_table(f"{where} [[stores]] #{index + 1}", table, env)
        if store.name in stores:
            raise ConfigError(where, f"{path}: store {store.name!r} is defined twice")
        stores[store.name] = store
    return stores


_STORE_KEYS = {
    "name",
    "api_url",
    "api_key",
    "api_key_file",
    "webhook_secret",
    "webhook_secret_file",
    "verify",
    "timezone",
    "api_concurrency",
}


def _store_from_table(where: str, table: Any, env: _Env) -> StoreConfig:
    if not isinstance(table, dict):
        raise ConfigError(where, "expected a table")
    unknown = set(table) - _STORE_KEYS
    if unknown:
        raise ConfigError(where, f"unknown key(s) {sorted(unknown)}")
    name = table.get("name")
    if not isinstance(name, str) or not STORE_NAME.match(name):
        raise ConfigError(f"{where} name", "a store needs a name of letters, digits, '_', '.', '-'")
    where = f"SYNCD_CONFIG store {name!r}"

    def text(key: str) -> str | None:
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{where} {key}", "expected a non-empty string")
        return value.strip() if isinstance(value, str) else None

    def secret(key: str) -> Secret | None:
        direct, path = text(key), text(f"{key}_file")
        if direct is not None and path is not None:
            raise ConfigError(f"{where} {key}", f"set either {key} or {key}_file, not both")
        if path is not None:
            return _read_secret_file(f"{where} {key}_file", Path(path))
        return Secret(direct) if direct is not None else None

    raw_url = text("api_url")
    api_url = _check_url(f"{where} api_url", raw_url) if raw_url else None
    api_key = secret("api_key")
    if (api_url is None) != (api_key is None):
        raise ConfigError(f"{where} api_url", "api_url and api_key must be set together")
    _check_api(f"{where} api_url", f"{where} api_key", api_url, api_key)
    verify = _verify_mode(f"{where} verify", text("verify"), has_key=api_key is not None)
    store = StoreConfig(
        name,
        api_url,
        api_key,
        secret("webhook_secret"),
        verify,
        api_concurrency=_toml_api_concurrency(f"{where} api_concurrency", table, env),
    )
    return _with_toml_timezone(store, f"{where} timezone", table.get("timezone"))


def _toml_api_concurrency(variable: str, table: dict[str, Any], env: _Env) -> int:
    """A store's ``api_concurrency``; without the key, ``SYNCD_API_CONCURRENCY`` (or 4)."""
    raw = table.get("api_concurrency")
    if raw is None:
        return env.integer(
            "SYNCD_API_CONCURRENCY", DEFAULT_API_CONCURRENCY, low=1, high=MAX_API_CONCURRENCY
        )
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(variable, f"expected a whole number, got {raw!r}")
    _check_range(variable, raw, 1, MAX_API_CONCURRENCY)
    return raw


# --- the store's time zone ---------------------------------------------------------
#
# An IANA zone name (``America/Mexico_City``, ``America/Tijuana``), read with
# zoneinfo (the ``tzdata`` package stands in for missing system zone files).
# A fixed offset such as ``-06:00`` is refused: it has no daylight saving
# rules, so it would put part of the year's orders on the wrong day.

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*[+-]\d{1,2}(?::?\d{2})?$", re.IGNORECASE)


def timezone_name(variable: str, raw: Any) -> str:
    """``raw`` as a known IANA zone name, or a ConfigError naming ``variable``."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(variable, "expected an IANA time zone name, e.g. America/Mexico_City")
    name = raw.strip()
    if _OFFSET.match(name):
        raise ConfigError(
            variable,
            f"{name!r} is a fixed offset, not a time zone name: use e.g. America/Mexico_City",
        )
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            variable, f"unknown time zone {name!r}: use an IANA name, e.g. America/Mexico_City"
        ) from None
    return name


def _with_env_timezone(store: StoreConfig, env: _Env, *, from_toml: bool) -> StoreConfig:
    raw = env.text("SYNCD_TIMEZONE")
    if raw is None:
        return store
    if from_toml:
        raise ConfigError(
            "SYNCD_TIMEZONE",
            f"store {store.name!r} is configured in SYNCD_CONFIG: set its timezone there",
        )
    return dataclasses.replace(store, timezone=timezone_name("SYNCD_TIMEZONE", raw))


def _with_toml_timezone(store: StoreConfig, variable: str, raw: Any) -> StoreConfig:
    if raw is None:
        return store
    return dataclasses.replace(store, timezone=timezone_name(variable, raw))

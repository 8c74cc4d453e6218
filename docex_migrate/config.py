"""DocEX's own YAML configuration, read into frozen dataclasses.

Lookup order: ``--config PATH``, ``$DOCEX_CONFIG``, ``~/.docex/config.yaml``, then the built-in
default (SQLite files under ``./storage``, database-level multi-tenancy). ``$DOCEX_DATABASE_URL``
(a SQLAlchemy PostgreSQL URL) overrides the ``database.postgres`` block and selects PostgreSQL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from . import tenants
from .errors import ConfigError

DEFAULT_SCHEMA_TEMPLATE = "tenant_{tenant_id}"
DEFAULT_PATH_TEMPLATE = "storage/tenant_{tenant_id}/docex.db"
USER_CONFIG = Path("~/.docex/config.yaml")
DATABASE_LEVEL = "database_level"
ROW_LEVEL = "row_level"
_MODELS = (DATABASE_LEVEL, ROW_LEVEL)


@dataclass(frozen=True)
class Timeouts:
    """How long a migration may wait, in seconds; 0 disables a limit (waits forever)."""

    lock_timeout: float = 10.0  # one statement waiting for a lock an application holds
    statement_timeout: float = 900.0  # one migration statement running (PostgreSQL)
    tenant_lock_wait: float = 300.0  # waiting for another docex-migrate run on the same tenant

    def __post_init__(self) -> None:
        for name in ("lock_timeout", "statement_timeout", "tenant_lock_wait"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name.replace('_', '-')} must be a number of seconds >= 0 (0 disables it), not {value!r}")


@dataclass(frozen=True)
class PostgresSettings:
    url: URL
    schema_template: str = DEFAULT_SCHEMA_TEMPLATE


@dataclass(frozen=True)
class SqliteSettings:
    path_template: str = DEFAULT_PATH_TEMPLATE


@dataclass(frozen=True)
class Settings:
    database_type: str = "sqlite"
    multi_tenancy_model: str = DATABASE_LEVEL
    sqlite: SqliteSettings = field(default_factory=SqliteSettings)
    postgres: PostgresSettings | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    source: Path | None = None  # the file read, None for the built-in default

    def describe_source(self) -> str:
        return str(self.source) if self.source else "the built-in default"


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The configuration file to read, in lookup order; None means the built-in default."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist: check --config")
        return path
    env = os.environ.get("DOCEX_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"config file {env!r} named by $DOCEX_CONFIG does not exist")
        return path
    user = USER_CONFIG.expanduser()
    return user if user.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: fix its syntax") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of DocEX keys (security:, database:)")
    return data


def _section(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{key} in the config must be a mapping")
    return value


def _postgres_url(block: dict[str, Any]) -> URL:
    """The PostgreSQL URL: $DOCEX_DATABASE_URL if set, else the postgres block's keys."""
    env = os.environ.get("DOCEX_DATABASE_URL")
    if env:
        try:
            url = make_url(env)
        except ArgumentError:
            raise ConfigError("$DOCEX_DATABASE_URL is not a valid URL: use postgresql://user:password@host:5432/dbname") from None
        if url.get_backend_name() != "postgresql":
            raise ConfigError(f"$DOCEX_DATABASE_URL must be a PostgreSQL URL, not {url.get_backend_name()!r}")
        return url.set(drivername="postgresql+psycopg")
    port = block.get("port", 5432)
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ConfigError(f"database.postgres.port must be a number, not {port!r}") from None
    query = {"sslmode": str(block["sslmode"])} if block.get("sslmode") else {}
    return URL.create(
        "postgresql+psycopg",
        username=block.get("user"),
        password=block.get("password"),
        host=block.get("host", "localhost"),
        port=port,
        database=block.get("database", "docex_db"),
        query=query,
    )


def parse_settings(data: dict[str, Any], source: Path | None = None) -> Settings:
    """Settings from DocEX's YAML keys; validates templates so nothing later can misuse them."""
    security = _section(data, "security", "")
    database = _section(data, "database", "")
    model = security.get("multi_tenancy_model", DATABASE_LEVEL)
    if model not in _MODELS:
        raise ConfigError(f"security.multi_tenancy_model must be one of {', '.join(_MODELS)}, not {model!r}")

    use_env_url = bool(os.environ.get("DOCEX_DATABASE_URL"))
    db_type = "postgres" if use_env_url else str(database.get("type", "sqlite")).lower()
    if db_type in ("postgresql", "postgres"):
        db_type = "postgres"
    if db_type not in ("sqlite", "postgres"):
        raise ConfigError(f"database.type must be 'sqlite' or 'postgres', not {database.get('type')!r}")

    sqlite_block = _section(database, "sqlite", "database.")
    path_template = str(sqlite_block.get("path_template", DEFAULT_PATH_TEMPLATE))
    postgres = None
    if db_type == "postgres":
        pg_block = _section(database, "postgres", "database.")
        schema_template = str(pg_block.get("schema_template", DEFAULT_SCHEMA_TEMPLATE))
        tenants.validate_schema_template(schema_template)
        postgres = PostgresSettings(url=_postgres_url(pg_block), schema_template=schema_template)
    else:
        tenants.validate_path_template(path_template)
    return Settings(
        database_type=db_type,
        multi_tenancy_model=model,
        sqlite=SqliteSettings(path_template=path_template),
        postgres=postgres,
        source=source,
    )


def load_settings(explicit: str | os.PathLike[str] | None = None) -> Settings:
    path = config_path(explicit)
    return parse_settings(_read_yaml(path) if path else {}, path)


def enable_multi_tenancy(path: Path | None) -> Path:
    """Write DocEX's two database-level security keys into the config file, keeping every other key.

    With no file in use this writes ``~/.docex/config.yaml``, as ``docex provision-tenant
    --enable-multi-tenancy`` does. Comments in the file are not preserved (PyYAML drops them).
    """
    target = path or USER_CONFIG.expanduser()
    data = _read_yaml(target) if target.is_file() else {}
    security = _section(data, "security", "")
    security["multi_tenancy_model"] = DATABASE_LEVEL
    security["tenant_database_routing"] = True
    data["security"] = security
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target

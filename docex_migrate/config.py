"""DocEX's own YAML configuration, read into frozen dataclasses.

Lookup order: ``--config PATH``, ``$DOCEX_CONFIG``, ``~/.docex/config.yaml``, then the built-in
default (SQLite files under ``./storage``, database-level multi-tenancy). ``$DOCEX_DATABASE_URL``
(a SQLAlchemy PostgreSQL URL) overrides the server named in the file and selects PostgreSQL.

PostgreSQL is read as DocEX 2.9 reads it: the server from ``database.postgresql`` if that block is
there and not empty, else from ``database.postgres`` (docex/db/connection.py: ``get('postgresql') or
get('postgres')``); the tenant schemas from ``database.postgres.schema_template`` only
(docex/config/config_resolver.py).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from . import excuses, tenants
from .errors import ConfigError
from .excuses import Excuse

DEFAULT_SCHEMA_TEMPLATE = "tenant_{tenant_id}"
DEFAULT_PATH_TEMPLATE = "storage/tenant_{tenant_id}/docex.db"
USER_CONFIG = Path("~/.docex/config.yaml")
DATABASE_LEVEL = "database_level"
ROW_LEVEL = "row_level"
_MODELS = (DATABASE_LEVEL, ROW_LEVEL)
# PostgreSQL's lock_timeout and statement_timeout are int milliseconds (at most 2147483647), and
# sqlite3 turns its timeout into int milliseconds too (a longer one overflows to 0: no waiting).
# One whole-second bound for every timeout, about 24.8 days, fits both.
MAX_TIMEOUT_SECONDS = 2_147_483


@dataclass(frozen=True)
class Timeouts:
    """How long a migration may wait, in seconds; 0 disables a limit (waits forever)."""

    lock_timeout: float = 10.0  # one statement waiting for a lock an application holds
    statement_timeout: float = 900.0  # one migration statement running (PostgreSQL)
    tenant_lock_wait: float = 300.0  # waiting for another docex-migrate run on the same tenant

    def __post_init__(self) -> None:
        for name in ("lock_timeout", "statement_timeout", "tenant_lock_wait"):
            value = getattr(self, name)
            # bool is an int to Python; nan compares false with everything, so test it by name.
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or not 0 <= value <= MAX_TIMEOUT_SECONDS:
                raise ConfigError(
                    f"{name.replace('_', '-')} must be a number of seconds from 0 to {MAX_TIMEOUT_SECONDS} "
                    f"(about 24 days; 0 disables it), not {value!r}"
                )


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
    excused_drift: tuple[Excuse, ...] = ()  # indexes a team added on purpose: not drift (excuses.py)

    def describe_source(self) -> str:
        return str(self.source) if self.source else "the built-in default"

    def with_template(self, template: str) -> Settings:
        """The same settings with tenants at another template (a scratch namespace's)."""
        if self.postgres is None:
            return replace(self, sqlite=SqliteSettings(path_template=template))
        return replace(self, postgres=replace(self.postgres, schema_template=template))


def environment(name: str) -> str | None:
    """An environment variable docex-migrate reads; None when unset. Set but empty is refused:
    taken as unset it would silently pick another configuration (the default's)."""
    value = os.environ.get(name)
    if value is not None and not value.strip():
        raise ConfigError(f"${name} is set but empty: unset it, or give it a value")
    return value


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The configuration file to read, in lookup order; None means the built-in default."""
    if explicit:
        return _named_file(Path(explicit), "--config")
    env = environment("DOCEX_CONFIG")
    if env:
        return _named_file(Path(env), "$DOCEX_CONFIG")
    user = USER_CONFIG.expanduser()
    return user if user.is_file() else None


def _named_file(path: Path, named_by: str) -> Path:
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} named by {named_by} is a directory, not a file: name the YAML file itself")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} named by {named_by} does not exist: check {named_by}")
    return path


# The keys docex-migrate reads, by the block that holds them. DocEX's file holds many more (its
# pool, storage and logging settings, ...), so other keys pass; only a near miss of one of these
# (schema_templat, multi_tenancy_modle) is refused: read as absent, it would silently mean the
# default (another namespace for every tenant).
_READ_KEYS = {
    "": {"security", "database", excuses.SECTION},
    f"{excuses.SECTION}.": {excuses.KEY},
    "security.": {"multi_tenancy_model", "tenant_database_routing"},
    "database.": {"type", "sqlite", "postgres", "postgresql"},
    "database.sqlite.": {"path_template"},
    "database.postgres.": {"host", "port", "database", "user", "password", "schema_template", "sslmode"},
    "database.postgresql.": {"host", "port", "database", "user", "password", "schema_template", "sslmode"},
}
_NEAR_MISS = 0.8  # difflib's ratio: schema_templat 0.97, schema (DocEX's) 0.57 against schema_template


def _check_keys(loader: yaml.SafeLoader, node: yaml.Node, path: Path) -> None:
    """Refuse a key given twice in one mapping (YAML keeps the last one silently) and a near
    miss of a key docex-migrate reads, naming the key and its line."""
    _refuse_duplicates(node, path)
    _refuse_near_misses(loader, node, path)


def _refuse_duplicates(node: yaml.Node, path: Path) -> None:
    """In each mapping as written: a key a merge key (<<) brings in may be overridden there."""
    stack: list[tuple[yaml.Node, str]] = [(node, "")]
    seen_nodes: set[int] = set()
    while stack:
        current, where = stack.pop()
        if id(current) in seen_nodes:  # an alias: the same node again
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            stack += [(item, f"{where}{i}.") for i, item in enumerate(current.value)]
        if not isinstance(current, yaml.MappingNode):
            continue
        lines: dict[str, int] = {}
        for key_node, value_node in current.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in lines:
                raise ConfigError(
                    f"config file {str(path)!r}: {where}{key} is given twice (lines {lines[key]} and {line}): keep one"
                )
            lines[key] = line
            stack.append((value_node, f"{where}{key}."))


def _refuse_near_misses(loader: yaml.SafeLoader, node: yaml.Node, path: Path) -> None:
    """In each block docex-migrate reads, as it reads it: with the keys a merge key (`<<: *pg`)
    brings in, and an aliased block checked wherever it is used. Only the paths of _READ_KEYS
    are walked, so a recursive alias ends too."""
    stack: list[tuple[yaml.Node, str]] = [(node, "")]
    while stack:
        current, where = stack.pop()
        known = _READ_KEYS.get(where)
        if known is None or not isinstance(current, yaml.MappingNode):
            continue
        loader.flatten_mapping(current)  # what construction does next: merge keys replaced by their pairs
        for key_node, value_node in current.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            if key not in known:
                meant = difflib.get_close_matches(key, known, n=1, cutoff=_NEAR_MISS)
                if meant:
                    raise ConfigError(
                        f"config file {str(path)!r}: {where}{key} at line {key_node.start_mark.line + 1} looks like "
                        f"a misspelling of {where}{meant[0]}: fix it (read as absent, the default would apply)"
                    )
            stack.append((value_node, f"{where}{key}."))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loader = yaml.SafeLoader(path.read_text(encoding="utf-8"))
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_keys(loader, node, path)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
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


def _port(value: object, where: str) -> int:
    """A TCP port. YAML's true is a bool, an int to Python, and 5432.7 is no port: neither passes."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{where} must be a whole number from 1 to 65535, not {value!r}")
    return value


def _text(block: dict[str, Any], key: str, default: str | None, where: str) -> str | None:
    """A string key of the server's block (``where``). YAML reads an unquoted 1234 as a number, which is
    meant as the digits; anything else is refused by type only, so a password is never printed."""
    value = block.get(key, default)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}.{key} must be a string, not {type(value).__name__}: quote it in the config")


# SQLAlchemy's URL pattern (sqlalchemy.engine.url._parse_url) up to the port, to read the port as written.
_URL_PORT = re.compile(r"[\w+]+://(?:[^:/]*(?::[^@]*)?@)?(?:\[[^/?]+\]|[^/:?]+)?(?::(?P<port>[^/?]*))?")


def _env_url(env: str) -> URL:
    # The URL parser (SQLAlchemy's, whose parts the driver gets) ends the password at its first
    # '@': the rest of a password holding a raw '@' would become the host or the database, and
    # be printed wherever they are (every connection error). Refused, saying nothing of it.
    if env.count("@") > 1:
        raise ConfigError(
            "$DOCEX_DATABASE_URL holds more than one '@': write an '@' of the password (or the user) as %40, "
            "as in postgresql://user:p%40ss@host:5432/dbname"
        )
    try:
        url = make_url(env)  # a port int() cannot read raises ValueError
    except (ArgumentError, ValueError):
        raise ConfigError("$DOCEX_DATABASE_URL is not a valid URL: use postgresql://user:password@host:5432/dbname") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"$DOCEX_DATABASE_URL must be a PostgreSQL URL, not {url.get_backend_name()!r}")
    if not url.database:
        raise ConfigError("$DOCEX_DATABASE_URL names no database: add it, as in postgresql://user:password@host:5432/dbname")
    # SQLAlchemy reads the port with int(), which takes '٥٤٣٢' (Arabic-Indic digits) or '5_432'
    # for 5432: the port as written must be ASCII digits, as everywhere else. Its value is not
    # printed: without an '@' the parser reads a password as the port.
    written = _URL_PORT.match(env)
    port = written["port"] if written else None
    if port and not (re.fullmatch(r"[0-9]+", port) and 1 <= int(port) <= 65535):
        raise ConfigError(
            "the port in $DOCEX_DATABASE_URL must be a whole number from 1 to 65535 in ASCII digits, "
            "as in postgresql://user:password@host:5432/dbname"
        )
    return url.set(drivername="postgresql+psycopg")


def _postgres_url(database_block: dict[str, Any]) -> URL:
    """The PostgreSQL URL: $DOCEX_DATABASE_URL if set, else the server's block, as DocEX picks it:
    database.postgresql if it is there and not empty, else database.postgres."""
    env = environment("DOCEX_DATABASE_URL")
    if env:
        return _env_url(env)
    name = "postgresql" if _section(database_block, "postgresql", "database.") else "postgres"
    where = f"database.{name}"
    block = _section(database_block, name, "database.")
    database = _text(block, "database", "docex_db", where)
    if not database:
        raise ConfigError(f"{where}.database must name the database (DocEX's default is docex_db)")
    query = {"sslmode": str(block["sslmode"])} if block.get("sslmode") else {}
    return URL.create(
        "postgresql+psycopg",
        username=_text(block, "user", None, where),
        password=_text(block, "password", None, where),
        host=_text(block, "host", "localhost", where),
        port=_port(block.get("port", 5432), f"{where}.port"),
        database=database,
        query=query,
    )


def parse_settings(data: dict[str, Any], source: Path | None = None) -> Settings:
    """Settings from DocEX's YAML keys; validates templates so nothing later can misuse them."""
    security = _section(data, "security", "")
    database = _section(data, "database", "")
    model = security.get("multi_tenancy_model", DATABASE_LEVEL)
    if model not in _MODELS:
        raise ConfigError(f"security.multi_tenancy_model must be one of {', '.join(_MODELS)}, not {model!r}")

    use_env_url = bool(environment("DOCEX_DATABASE_URL"))
    db_type = "postgres" if use_env_url else str(database.get("type", "sqlite")).lower()
    if db_type in ("postgresql", "postgres"):
        db_type = "postgres"
    if db_type not in ("sqlite", "postgres"):
        raise ConfigError(f"database.type must be 'sqlite' or 'postgres', not {database.get('type')!r}")

    sqlite_block = _section(database, "sqlite", "database.")
    path_template = sqlite_block.get("path_template", DEFAULT_PATH_TEMPLATE)
    postgres = None
    if db_type == "postgres":
        schema_template = _section(database, "postgres", "database.").get("schema_template", DEFAULT_SCHEMA_TEMPLATE)
        tenants.validate_schema_template(schema_template)
        unread = _section(database, "postgresql", "database.").get("schema_template", schema_template)
        if unread != schema_template:  # DocEX would put every tenant in another schema than it says
            raise ConfigError(
                "database.postgresql.schema_template is not read by DocEX, which names tenant schemas by "
                f"database.postgres.schema_template ({schema_template!r} here): move it there, or remove it"
            )
        postgres = PostgresSettings(url=_postgres_url(database), schema_template=schema_template)
    else:
        tenants.validate_path_template(path_template)
    return Settings(
        database_type=db_type,
        multi_tenancy_model=model,
        sqlite=SqliteSettings(path_template=path_template),
        postgres=postgres,
        source=source,
        excused_drift=excuses.parse(data.get(excuses.SECTION)),
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

"""DocEX's configuration: lookup order, keys, the PostgreSQL URL, and --enable-multi-tenancy."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import sqlalchemy as sa
import yaml
from helpers import DATABASE_LEVEL, cli, database_section, write_config

from docex_migrate.config import (
    DEFAULT_PATH_TEMPLATE,
    Timeouts,
    enable_multi_tenancy,
    load_settings,
    parse_settings,
)
from docex_migrate.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DOCEX_CONFIG", raising=False)
    monkeypatch.delenv("DOCEX_DATABASE_URL", raising=False)


def test_builtin_default_is_sqlite_database_level():
    settings = load_settings()
    assert (settings.database_type, settings.multi_tenancy_model) == ("sqlite", "database_level")
    assert settings.sqlite.path_template == DEFAULT_PATH_TEMPLATE
    assert settings.source is None


def test_lookup_order_flag_then_env_then_home(tmp_path, monkeypatch):
    home = write_config(tmp_path / "home/.docex/config.yaml", {"database": {"sqlite": {"path_template": "home/{tenant_id}.db"}}})
    assert load_settings().source == home
    env = write_config(tmp_path / "env.yaml", {"database": {"sqlite": {"path_template": "env/{tenant_id}.db"}}})
    monkeypatch.setenv("DOCEX_CONFIG", str(env))
    assert load_settings().sqlite.path_template == "env/{tenant_id}.db"
    flag = write_config(tmp_path / "flag.yaml", {"database": {"sqlite": {"path_template": "flag/{tenant_id}.db"}}})
    assert load_settings(flag).sqlite.path_template == "flag/{tenant_id}.db"


def test_postgres_block_builds_psycopg_url():
    settings = parse_settings(
        {
            "database": {
                "type": "postgres",
                "postgres": {
                    "host": "db",
                    "port": 5433,
                    "database": "docex",
                    "user": "u",
                    "password": "secret",
                    "sslmode": "require",
                },
            }
        }
    )
    url = settings.postgres.url
    assert (url.drivername, url.host, url.port, url.database, url.username) == ("postgresql+psycopg", "db", 5433, "docex", "u")
    assert url.query["sslmode"] == "require"
    assert settings.postgres.schema_template == "tenant_{tenant_id}"


def test_database_url_env_overrides_and_selects_postgres(monkeypatch):
    monkeypatch.setenv("DOCEX_DATABASE_URL", "postgresql://x:pw@h:1/d")
    settings = parse_settings({"database": {"type": "sqlite", "postgres": {"schema_template": "t_{tenant_id}"}}})
    assert settings.database_type == "postgres"
    assert settings.postgres.url.render_as_string(hide_password=False) == "postgresql+psycopg://x:pw@h:1/d"
    assert settings.postgres.schema_template == "t_{tenant_id}"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"database": {"type": "mysql"}}, "database.type"),
        ({"security": {"multi_tenancy_model": "schema"}}, "multi_tenancy_model"),
        ({"database": {"type": "postgres", "postgres": {"port": "abc"}}}, "port"),
        ({"database": {"type": "postgres", "postgres": {"schema_template": "tenant"}}}, "tenant_id"),
        ({"database": {"sqlite": {"path_template": "storage/{tenant_id}/../../x.db"}}}, "leaves"),
        ({"database": ["x"]}, "mapping"),
    ],
)
def test_invalid_settings_are_refused(data, message):
    with pytest.raises(Exception, match=message):
        parse_settings(data)


def test_malformed_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("database:\n  type: [sqlite\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_settings(bad)


def test_missing_explicit_file_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    monkeypatch.setenv("DOCEX_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="DOCEX_CONFIG"):
        load_settings()


def test_non_postgres_database_url_is_refused(monkeypatch):
    monkeypatch.setenv("DOCEX_DATABASE_URL", "mysql://x@h/d")
    with pytest.raises(ConfigError, match="PostgreSQL URL"):
        load_settings()


def test_enable_multi_tenancy_keeps_every_other_key(tmp_path):
    path = write_config(
        tmp_path / "c.yaml",
        {
            "security": {"multi_tenancy_model": "row_level", "other": 1},
            "database": {"type": "sqlite"},
            "logging": {"level": "DEBUG"},
        },
    )
    enable_multi_tenancy(path)
    data = yaml.safe_load(path.read_text())
    assert data == {
        "security": {"multi_tenancy_model": "database_level", "other": 1, "tenant_database_routing": True},
        "database": {"type": "sqlite"},
        "logging": {"level": "DEBUG"},
    }


def test_enable_multi_tenancy_without_file_writes_user_config(tmp_path):
    written = enable_multi_tenancy(None)
    assert written == tmp_path / "home/.docex/config.yaml"
    assert yaml.safe_load(written.read_text())["security"]["multi_tenancy_model"] == "database_level"


def test_a_directory_as_config_file_is_named_a_directory(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        load_settings(tmp_path)
    monkeypatch.setenv("DOCEX_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError, match=r"is a directory, not a file.*DOCEX_CONFIG|DOCEX_CONFIG.*is a directory"):
        load_settings()


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:5432", "postgresql://postgres@127.0.0.1:5432/"])
def test_database_url_without_a_database_is_refused(monkeypatch, url):
    monkeypatch.setenv("DOCEX_DATABASE_URL", url)
    with pytest.raises(ConfigError, match="names no database") as caught:
        load_settings()
    assert "None" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h:99999/d",
        "postgresql://u@h:0/d",
        "postgresql://u@h:abc/d",
        "postgresql://u@h:٥٤٣٢/d",  # Arabic-Indic digits: int() reads them as 5432
        "postgresql://u:pw@h:5_432/d",  # and this one too
        "postgresql://u@[::1]:\uff15\uff14\uff13\uff12/d",  # full-width digits, after an IPv6 host
    ],
)
def test_database_url_with_a_bad_port_is_refused(monkeypatch, url):
    monkeypatch.setenv("DOCEX_DATABASE_URL", url)
    with pytest.raises(ConfigError, match="DOCEX_DATABASE_URL"):
        load_settings()


@pytest.mark.parametrize("port", [5432.7, True, False, 0, 65536, -1, "5432.0", "abc", [5432], None])
def test_port_must_be_a_whole_number_from_1_to_65535(port):
    # YAML's true is a bool, and bool is an int to Python: it must not become port 1.
    with pytest.raises(ConfigError, match="port must be a whole number from 1 to 65535"):
        parse_settings({"database": {"type": "postgres", "postgres": {"port": port}}})


@pytest.mark.parametrize("port", [5432, "5433"])
def test_integer_ports_are_accepted(port):
    settings = parse_settings({"database": {"type": "postgres", "postgres": {"port": port}}})
    assert settings.postgres.url.port == int(port)


@pytest.mark.parametrize(
    "key, value",
    [
        ("host", ["db"]),
        ("host", 127.1),
        ("host", True),
        ("user", {"name": "u"}),
        ("database", ["docex"]),
        ("database", None),
        ("database", ""),
        ("schema_template", ["tenant_{tenant_id}"]),
        ("schema_template", 5),
    ],
)
def test_postgres_keys_of_the_wrong_type_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"database.postgres.{key} must"):
        parse_settings({"database": {"type": "postgres", "postgres": {key: value}}})


def test_a_password_of_the_wrong_type_is_refused_without_printing_it():
    with pytest.raises(ConfigError, match="database.postgres.password must be a string") as caught:
        parse_settings({"database": {"type": "postgres", "postgres": {"password": ["hunter2-secret"]}}})
    assert "hunter2" not in str(caught.value)
    # An unquoted numeric password is read by YAML as a number: it is meant as the digits.
    settings = parse_settings({"database": {"type": "postgres", "postgres": {"password": 123456}}})
    assert settings.postgres.url.password == "123456"


def test_a_path_template_of_the_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="database.sqlite.path_template must be a string"):
        parse_settings({"database": {"sqlite": {"path_template": ["storage/{tenant_id}.db"]}}})


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e12, 1e300, -1, 2_147_484, True, "10"])
def test_timeouts_outside_what_the_databases_accept_are_refused(value):
    for name in ("lock_timeout", "statement_timeout", "tenant_lock_wait"):
        with pytest.raises(ConfigError, match=f"{name.replace('_', '-')} must be .* from 0 to 2147483"):
            Timeouts(**{name: value})


def test_timeouts_inside_the_range_are_accepted():
    assert Timeouts(lock_timeout=0, statement_timeout=2_147_483, tenant_lock_wait=0.0004).statement_timeout == 2_147_483


# Every character a URL treats specially, around a fragment that must never be printed.
SPECIAL_PASSWORDS = ["Pw@XYZsecret", "Pw:XYZsecret", "Pw/XYZsecret", "Pw%XYZsecret", "Pw#XYZsecret", "P@:/%#XYZsecret"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:Pw@XYZsecret@host/db",  # the rest of the password became the host
        "postgresql://u:Pw@b/XYZsecret@host/db",  # ... or the host and the database
    ],
)
def test_a_raw_at_sign_in_the_urls_password_is_refused_without_printing_any_of_it(monkeypatch, url):
    """SQLAlchemy's parser ends the password at its first '@': 'XYZsecret@host' was the host,
    printed by every connection error ('unknown host in XYZsecret@host:5432/db')."""
    monkeypatch.setenv("DOCEX_DATABASE_URL", url)
    result = cli("status", "--verbose")
    assert result.exit_code == 2, result.output
    assert "%40" in result.stderr and "XYZsecret" not in result.output and "Pw" not in result.output


@pytest.mark.parametrize("password", SPECIAL_PASSWORDS)
def test_passwords_with_url_characters_are_read_exactly_and_never_printed(tmp_path, monkeypatch, password):
    """From the postgres block and, percent-encoded, from $DOCEX_DATABASE_URL: the driver gets
    the password exactly, and a connection failure (with --verbose: the traceback too) names
    where it could not connect, never the password or a piece of it."""
    block = {"host": "127.0.0.1", "port": 1, "database": "d", "user": "u", "password": password}
    config = write_config(tmp_path / "docex.yaml", {"database": {"type": "postgres", "postgres": block}})
    assert parse_settings(yaml.safe_load(config.read_text())).postgres.url.password == password
    encoded = f"postgresql://u:{quote(password, safe='')}@127.0.0.1:1/d"
    monkeypatch.setenv("DOCEX_DATABASE_URL", encoded)
    assert load_settings().postgres.url.password == password
    for env_url in (encoded, None):
        if env_url is None:
            monkeypatch.delenv("DOCEX_DATABASE_URL")
        result = cli("status", "--verbose", "--config", str(config))
        assert result.exit_code == 2 and "127.0.0.1:1" in result.stderr, result.output
        assert "XYZsecret" not in result.output and quote(password, safe="") not in result.output


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    """Found in review: YAML keeps the last of two equal keys silently (here: another database)."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "app: {name: DocEX}\ndatabase:\n  type: postgres\n  postgres:\n    host: db1\n    database: docex\n    host: db2\n"
    )
    with pytest.raises(ConfigError, match=r"database\.postgres\.host is given twice \(lines 5 and 7\)"):
        load_settings(path)
    path.write_text("storage:\n  path: a\n  path: b\n")  # a DocEX block docex-migrate does not read: refused too
    with pytest.raises(ConfigError, match=r"storage\.path is given twice \(lines 2 and 3\)"):
        load_settings(path)


def test_a_misspelled_key_is_refused_and_docex_own_keys_pass(tmp_path):
    """A near miss of a key docex-migrate reads would silently mean its default (every tenant in
    another namespace); DocEX's other keys in the same blocks are its own business."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "database:\n  type: sqlite\n  pool_size: 5\n  sqlite:\n    path: docex.db\n    path_templat: 'x/{tenant_id}.db'\n"
    )
    with pytest.raises(
        ConfigError, match=r"database\.sqlite\.path_templat at line 6 looks like a misspelling of database\.sqlite\.path_template"
    ):
        load_settings(path)
    path.write_text("security:\n  multi_tenancy_modle: row_level\n")
    with pytest.raises(ConfigError, match=r"security\.multi_tenancy_modle at line 2"):
        load_settings(path)
    path.write_text(
        "app: {name: DocEX, debug: true}\ndatabase:\n  type: sqlite\n  echo: true\n  pool_size: 5\n"
        "  sqlite: {path: docex.db, path_template: 's/{tenant_id}.db'}\n  postgres: {schema: docex}\nstorage: {type: filesystem}\n"
    )
    assert load_settings(path).sqlite.path_template == "s/{tenant_id}.db"


def test_docex_own_postgresql_block_is_read_not_refused_as_a_misspelling(pg_env, tmp_path, monkeypatch):
    """DocEX 2.9 connects with `database.postgresql` before `database.postgres`
    (docex/db/connection.py: `db_config.get('postgresql') or db_config.get('postgres')`), and names
    tenant schemas by `database.postgres.schema_template` only (docex/config/config_resolver.py).
    Found in review: the near-miss check refused `postgresql` as "a misspelling of
    database.postgres" (exit 2). Here the postgres block names an unreachable server and the
    schema template; the postgresql block the real server: the tenant is provisioned in the
    schema the template names, in the postgresql block's database."""
    env = pg_env
    server = database_section("postgres", "unused", env.url)["postgres"]
    del server["schema_template"]
    elsewhere = {"host": "127.0.0.1", "port": 1, "database": "nowhere", "schema_template": "acct_{tenant_id}"}
    config = tmp_path / "docex-postgresql.yaml"
    database = {"type": "postgres", "postgres": elsewhere, "postgresql": server}
    write_config(config, {"database": database, "security": DATABASE_LEVEL})
    monkeypatch.setenv("DOCEX_CONFIG", str(config))
    result = cli("provision", "alpha")
    assert result.exit_code == 0, result.stderr
    with env.engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = 'acct_alpha'")).scalar() == 1


def test_the_server_block_is_picked_as_docex_picks_it():
    """postgresql if it is there and not empty (DocEX's `or`), else postgres; errors name the block read."""
    postgres = {"host": "pg-host", "database": "pg_db"}
    postgresql = {"host": "pgsql-host", "port": 5433, "database": "pgsql_db"}
    both = parse_settings({"database": {"type": "postgresql", "postgres": postgres, "postgresql": postgresql}})
    assert (both.postgres.url.host, both.postgres.url.port, both.postgres.url.database) == ("pgsql-host", 5433, "pgsql_db")
    for empty in ({}, None):
        fallback = parse_settings({"database": {"type": "postgres", "postgres": postgres, "postgresql": empty}})
        assert (fallback.postgres.url.host, fallback.postgres.url.database) == ("pg-host", "pg_db")
    with pytest.raises(ConfigError, match=r"database\.postgresql\.port must be a whole number"):
        parse_settings({"database": {"type": "postgres", "postgresql": {"port": "x"}}})
    with pytest.raises(ConfigError, match=r"database\.postgresql in the config must be a mapping"):
        parse_settings({"database": {"type": "postgres", "postgresql": "db:5432"}})


def test_a_schema_template_docex_does_not_read_is_refused():
    """DocEX ignores a schema_template in the postgresql block: its tenants are in
    database.postgres.schema_template's schemas (tenant_{tenant_id} by default). Read, it would
    migrate schemas DocEX never uses; ignored, it would silently mean the default."""
    with pytest.raises(ConfigError, match=r"database\.postgresql\.schema_template is not read by DocEX.*'tenant_\{tenant_id\}'"):
        parse_settings({"database": {"type": "postgres", "postgresql": {"schema_template": "acct_{tenant_id}"}}})
    same = {"schema_template": "acct_{tenant_id}"}
    settings = parse_settings({"database": {"type": "postgres", "postgres": same, "postgresql": {**same, "host": "h"}}})
    assert (settings.postgres.schema_template, settings.postgres.url.host) == ("acct_{tenant_id}", "h")


# Every key DocEX 2.9.9/2.9.10 reads or ships in its default_config.yaml, in the blocks docex-migrate reads.
DOCEX_KEYS = {
    "": ["database", "security", "multi_tenancy", "app", "storage", "logging"],
    "security": ["multi_tenancy_model", "tenant_database_routing", "enforce_user_context", "context_match_fields"],
    "database": ["type", "path", "sqlite", "postgres", "postgresql", "echo", "pool_size", "max_overflow", "pool_timeout"]
    + ["pool_recycle", "vectors"],
    "database.sqlite": ["path", "path_template"],
    "database.postgres": ["host", "port", "database", "user", "password", "schema_template", "sslmode", "system_schema"]
    + ["schema"],
}


@pytest.mark.parametrize(
    "where, key",
    [(where, key) for where, keys in DOCEX_KEYS.items() for key in keys]
    + [("database.postgresql", key) for key in DOCEX_KEYS["database.postgres"] if key != "schema_template"],
)
def test_no_key_docex_reads_is_refused_as_a_misspelling(tmp_path, where, key):
    """Each key alone, with a value docex-migrate accepts where it reads the key."""
    values = {"type": "sqlite", "port": 5432, "path_template": "s/{tenant_id}.db", "schema_template": "t_{tenant_id}"}
    values["multi_tenancy_model"] = "database_level"
    kind = "postgres" if where.startswith("database.postgres") else "sqlite"
    data: dict = {"database": {"type": kind}}
    block = data
    for part in filter(None, where.split(".")):
        block = block.setdefault(part, {})
    block.setdefault(key, {} if not where or key in ("sqlite", "postgres", "postgresql") else values.get(key, "x"))
    assert load_settings(write_config(tmp_path / "docex.yaml", data)).database_type == kind


def test_a_misspelled_key_merged_in_by_a_yaml_merge_key_is_refused(pg_env, tmp_path, monkeypatch):
    """Found in review: the near-miss check looked at each mapping where it is written, once: a
    block shared by an anchor and brought into database.postgres by a merge key (`<<: *pg`,
    common in compose-style files) was checked under its own key (`x-pg`, not one docex-migrate
    reads), so its `schema_templat` passed, was read as absent, and every tenant went to the
    default schema `tenant_{tenant_id}` instead. Refused (exit 2), naming the key, nothing created."""
    env = pg_env
    block = database_section("postgres", "acct_{tenant_id}", env.url)["postgres"]
    block["schema_templat"] = block.pop("schema_template")
    config = tmp_path / "docex-merge.yaml"
    lines = ["x-pg: &pg"] + [f"  {k}: {v!r}" if isinstance(v, str) else f"  {k}: {v}" for k, v in block.items()]
    lines += ["database:", "  type: postgres", "  postgres:", "    <<: *pg", "security:"]
    lines += [f"  {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in DATABASE_LEVEL.items()]
    config.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("DOCEX_CONFIG", str(config))
    result = cli("provision", "beta")
    with env.engine().connect() as conn:
        created = conn.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE '%beta'")).scalars().all()
    with env.engine().connect() as conn:  # never leave a tenant_beta behind in the shared database
        conn.execute(sa.text('DROP SCHEMA IF EXISTS "tenant_beta" CASCADE'))
        conn.commit()
    assert result.exit_code == 2, (result.exit_code, result.stderr, created)
    assert "schema_templat" in result.stderr
    assert created == []


def test_merge_keys_and_aliases_are_checked_where_they_are_read_and_overrides_pass(tmp_path):
    path = tmp_path / "docex.yaml"
    # An alias (not a merge) used as the postgres block, its anchor under a key docex-migrate does not read.
    path.write_text("x-pg: &pg {host: db, schema_templat: 'a_{tenant_id}'}\ndatabase: {type: postgres, postgres: *pg}\n")
    with pytest.raises(ConfigError, match=r"database\.postgres\.schema_templat at line 1 looks like a misspelling"):
        load_settings(path)
    # A merge key's pair overridden in the mapping that merges it is not a key given twice.
    path.write_text(
        "x-pg: &pg {host: db, schema_template: 'a_{tenant_id}'}\n"
        "database:\n  type: postgres\n  postgres:\n    <<: *pg\n    schema_template: 'b_{tenant_id}'\n"
    )
    settings = load_settings(path)
    assert (settings.postgres.url.host, settings.postgres.schema_template) == ("db", "b_{tenant_id}")
    # A recursive alias ends.
    path.write_text("database: &d {type: sqlite, sqlite: {path_template: 's/{tenant_id}.db'}, again: *d}\n")
    assert load_settings(path).sqlite.path_template == "s/{tenant_id}.db"


def test_non_ascii_digits_in_the_database_url_port_are_refused_like_everywhere_else(pg_env, monkeypatch):
    """Found in review: every number a user types is ASCII-only (the config's `port: "٥٤٣٢"` is
    refused), but SQLAlchemy's URL parser reads $DOCEX_DATABASE_URL's port with int(), which
    takes Arabic-Indic digits: `:٥٤٣٢` connected to 5432. Refused, exit 2, one line."""
    env = pg_env
    url = env.url.set(drivername="postgresql").render_as_string(hide_password=False)
    monkeypatch.setenv("DOCEX_DATABASE_URL", url.replace(f":{env.url.port or 5432}/", ":٥٤٣٢/"))
    result = cli("status")
    assert result.exit_code == 2, result.output
    assert "port" in result.stderr and len(result.stderr.strip().splitlines()) == 1

"""DocEX's configuration: lookup order, keys, the PostgreSQL URL, and --enable-multi-tenancy."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import yaml
from helpers import cli, write_config

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


@pytest.mark.parametrize("url", ["postgresql://u@h:99999/d", "postgresql://u@h:0/d", "postgresql://u@h:abc/d"])
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

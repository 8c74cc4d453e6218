"""DocEX's configuration: lookup order, keys, the PostgreSQL URL, and --enable-multi-tenancy."""

from __future__ import annotations

import pytest
import yaml

from docex_migrate.config import (
    DEFAULT_PATH_TEMPLATE,
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


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_builtin_default_is_sqlite_database_level():
    settings = load_settings()
    assert (settings.database_type, settings.multi_tenancy_model) == ("sqlite", "database_level")
    assert settings.sqlite.path_template == DEFAULT_PATH_TEMPLATE
    assert settings.source is None


def test_lookup_order_flag_then_env_then_home(tmp_path, monkeypatch):
    home = write(tmp_path / "home/.docex/config.yaml", {"database": {"sqlite": {"path_template": "home/{tenant_id}.db"}}})
    assert load_settings().source == home
    env = write(tmp_path / "env.yaml", {"database": {"sqlite": {"path_template": "env/{tenant_id}.db"}}})
    monkeypatch.setenv("DOCEX_CONFIG", str(env))
    assert load_settings().sqlite.path_template == "env/{tenant_id}.db"
    flag = write(tmp_path / "flag.yaml", {"database": {"sqlite": {"path_template": "flag/{tenant_id}.db"}}})
    assert load_settings(flag).sqlite.path_template == "flag/{tenant_id}.db"


def test_postgres_block_builds_psycopg_url():
    settings = parse_settings({"database": {"type": "postgres", "postgres": {
        "host": "db", "port": 5433, "database": "docex", "user": "u", "password": "secret", "sslmode": "require",
    }}})
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


@pytest.mark.parametrize("data, message", [
    ({"database": {"type": "mysql"}}, "database.type"),
    ({"security": {"multi_tenancy_model": "schema"}}, "multi_tenancy_model"),
    ({"database": {"type": "postgres", "postgres": {"port": "abc"}}}, "port"),
    ({"database": {"type": "postgres", "postgres": {"schema_template": "tenant"}}}, "tenant_id"),
    ({"database": {"sqlite": {"path_template": "storage/{tenant_id}/../../x.db"}}}, "leaves"),
    ({"database": ["x"]}, "mapping"),
])
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
    path = write(tmp_path / "c.yaml", {
        "security": {"multi_tenancy_model": "row_level", "other": 1},
        "database": {"type": "sqlite"}, "logging": {"level": "DEBUG"},
    })
    enable_multi_tenancy(path)
    data = yaml.safe_load(path.read_text())
    assert data == {
        "security": {"multi_tenancy_model": "database_level", "other": 1, "tenant_database_routing": True},
        "database": {"type": "sqlite"}, "logging": {"level": "DEBUG"},
    }


def test_enable_multi_tenancy_without_file_writes_user_config(tmp_path):
    written = enable_multi_tenancy(None)
    assert written == tmp_path / "home/.docex/config.yaml"
    assert yaml.safe_load(written.read_text())["security"]["multi_tenancy_model"] == "database_level"

"""deprovision: backup first, then the namespace is gone; refused without --yes."""

from __future__ import annotations

import json
import sqlite3

import pytest
import sqlalchemy as sa
from helpers import tenant_engine
from typer.testing import CliRunner

from docex_migrate.backends.postgresql import driver_dump
from docex_migrate.cli import app


def run(*args):
    return CliRunner().invoke(app, list(args))


def add_basket(env, tenant_id):
    engine = tenant_engine(env, tenant_id)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO docbasket VALUES ('bas_keep', 'invoices', NULL, '{\"a\": 1}', 'active', "
            "'2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        )
    engine.dispose()


def test_deprovision_writes_a_backup_then_removes_the_tenant(env):
    assert run("provision", "acme_corp", "other").exit_code == 0
    add_basket(env, "acme_corp")
    result = run("deprovision", "acme_corp", "--yes", "--json")
    assert result.exit_code == 0, result.output
    backup = env.workdir / json.loads(result.stdout)["backup"]
    assert backup.parent == env.workdir / "backups"
    if env.kind == "sqlite":
        with sqlite3.connect(backup) as db:
            assert db.execute("SELECT name FROM docbasket").fetchall() == [("invoices",)]
        db.close()
        assert not (env.workdir / "storage/tenant_acme_corp").exists()
        assert (env.workdir / "storage").is_dir()  # the template's own directory stays
    else:
        text = backup.read_text()
        assert "CREATE TABLE" in text and "bas_keep" in text
    rows = json.loads(run("status", "--json").stdout)
    assert [r["tenant_id"] for r in rows] == ["other"]


def test_deprovision_refuses_without_yes_and_for_missing_tenants(env):
    run("provision", "acme_corp")
    before = env.everything()
    result = run("deprovision", "acme_corp")
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert env.everything() == before
    result = run("deprovision", "ghost", "--yes")
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = run("deprovision", "Bad;Id", "--yes")
    assert result.exit_code == 2 and "invalid tenant id" in result.stderr
    assert env.everything() == before


def test_no_backup_writes_nothing(env):
    run("provision", "acme_corp")
    result = run("deprovision", "acme_corp", "--yes", "--no-backup")
    assert result.exit_code == 0
    assert "no backup written" in result.stdout
    assert not (env.workdir / "backups").exists()


@pytest.mark.postgres
def test_driver_dump_restores_without_pg_dump(pg_env):
    """The fallback dump (no pg_dump installed) is valid SQL that recreates tables and rows."""
    run("provision", "acme_corp")
    add_basket(pg_env, "acme_corp")
    schema = pg_env.namespace("acme_corp")
    with pg_env.engine().connect() as conn:
        dump = driver_dump(conn, schema)
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        conn.exec_driver_sql(dump)
    with pg_env.engine().connect() as conn:
        basket = conn.execute(sa.text(f'SELECT name, storage_config::text FROM "{schema}".docbasket')).one()
        tables = conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": schema}).scalar()
    assert tuple(basket) == ("invoices", '{"a": 1}')
    assert tables == 12  # 11 tables and alembic_version

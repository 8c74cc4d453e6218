"""PostgreSQL: each tenant's objects, enum types and alembic_version stay inside its own schema."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from helpers import head, migrate_to

from docex_migrate import api
from docex_migrate.backends.postgresql import scope_to

pytestmark = pytest.mark.postgres

OBJECTS = sa.text(
    "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = ANY(:schemas)"
)
TYPES = sa.text(
    "SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
    " WHERE t.typtype = 'e' AND n.nspname = ANY(:schemas)"
)


def test_nothing_lands_in_public_or_another_tenant(pg_env):
    with pg_env.engine().connect() as conn:
        public_before = set(conn.execute(OBJECTS, {"schemas": ["public"]}).all())
    migrate_to(pg_env, "one", "s2_docex_2_0_3")  # S1/S2 have native enum types
    api.provision(pg_env.settings, ["two"])
    one, two = pg_env.namespace("one"), pg_env.namespace("two")
    with pg_env.engine().connect() as conn:
        assert set(conn.execute(OBJECTS, {"schemas": ["public"]}).all()) == public_before
        objects = conn.execute(OBJECTS, {"schemas": [one, two]}).all()
        types = conn.execute(TYPES, {"schemas": ["public", one, two]}).all()
        versions = {
            s: conn.execute(sa.select(sa.column("version_num")).select_from(sa.table("alembic_version", schema=s))).scalar()
            for s in (one, two)
        }
    tables = {(s, name) for s, name, kind in objects if kind == "r"}
    assert {name for s, name in tables if s == one} == {name for s, name in tables if s == two}
    assert len(tables) == 24  # 11 tables and alembic_version in each
    assert sorted(types) == [(one, "routemethod"), (one, "transporttype")]
    assert versions == {one: "s2_docex_2_0_3", two: head()}


def test_search_path_lasts_for_the_tenant_transaction_only(pg_env):
    api.provision(pg_env.settings, ["one", "two"])
    one, two = pg_env.namespace("one"), pg_env.namespace("two")
    with pg_env.engine().connect() as conn:  # one server session, reused for both tenants
        default = conn.exec_driver_sql("SHOW search_path").scalar()
        conn.rollback()
        with conn.begin():
            scope_to(conn, one)
            assert conn.exec_driver_sql("SHOW search_path").scalar() == f'"{one}"'
            conn.exec_driver_sql("INSERT INTO docbasket VALUES ('b1', 'n', NULL, '{}', 'active', now(), now())")
        assert conn.exec_driver_sql("SHOW search_path").scalar() == default
        conn.rollback()
        with conn.begin():
            scope_to(conn, two)
            assert conn.exec_driver_sql("SELECT count(*) FROM docbasket").scalar() == 0
        counts = [
            conn.execute(sa.select(sa.func.count()).select_from(sa.table("docbasket", schema=s))).scalar() for s in (one, two)
        ]
    assert counts == [1, 0]

"""PostgreSQL: each tenant's objects, enum types and alembic_version stay inside its own schema."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from helpers import head, head_tables, migrate_to

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
    assert {name for s, name in tables if s == two} == {*head_tables(), "alembic_version"}
    assert {name for s, name in tables if s == one} <= {name for s, name in tables if s == two}
    assert len(tables) == len(head_tables()) + 1 + 12  # S2 has DocEX's 11 tables already, and alembic_version
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


SESSION = sa.text(
    "SELECT pg_backend_pid(), current_setting('search_path'), current_setting('application_name'),"
    " current_setting('work_mem'), current_setting('lock_timeout'),"
    " (SELECT count(*) FROM pg_class WHERE relpersistence = 't'),"  # temporary tables, any session's schema
    " (SELECT count(*) FROM pg_prepared_statements),"
    " (SELECT count(*) FROM pg_listening_channels()),"
    " (SELECT array_agg(objid ORDER BY objid) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"
)


def _leave_everything_behind(connection) -> None:
    """What a careless revision could leave in the session: settings, a temporary table, a
    prepared statement, a session advisory lock, a LISTEN, and queries psycopg would prepare."""
    for statement in (
        "SET application_name = 'tenant one'",
        "SET work_mem = '7MB'",
        "SET lock_timeout = '1234ms'",
        "CREATE TEMPORARY TABLE leftover (x int)",
        "PREPARE leftover_plan AS SELECT 1",
        "SELECT pg_advisory_lock(42)",
        "LISTEN leftover",
    ):
        connection.exec_driver_sql(statement)
    for _ in range(8):  # past psycopg's prepare_threshold, were it on
        connection.execute(sa.text("SELECT 1"))


def test_tenants_on_a_reused_connection_see_nothing_of_each_other(pg_env):
    """Tenant after tenant on one connection (as a run does, Backend.reusing_connection): the next
    tenant sees none of the previous one's settings, temporary objects, prepared statements or
    locks; so a PgBouncer in transaction mode, which may hand each transaction another server
    session, changes nothing either. A failed tenant's connection is discarded, not reused."""
    backend = pg_env.backend
    first, second = pg_env.namespace("first"), pg_env.namespace("second")
    try:
        with backend.reusing_connection():
            with backend.transaction("first", create=True) as connection:
                before = connection.execute(SESSION).one()
                _leave_everything_behind(connection)
            with backend.transaction("second", create=True) as connection:
                after = connection.execute(SESSION).one()
                assert connection.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar() == 0
            with pytest.raises(sa.exc.DataError), backend.transaction("third", create=True) as connection:
                connection.exec_driver_sql("SELECT 1 / 0")
            with backend.transaction("fourth", create=True) as connection:
                replaced = connection.execute(SESSION).one()
    finally:
        backend.dispose()
    pid, search_path, application, work_mem, lock_timeout, temporary, prepared, listening, advisory = after
    assert pid == before[0]  # the same connection
    assert (search_path, before[1]) == (f'"{second}"', f'"{first}"')
    ours = f"docex-migrate (pid {os.getpid()})"  # the backend's own application_name
    assert (application, work_mem, lock_timeout) == before[2:5] == (ours, "4MB", "10s")
    assert (temporary, prepared, listening) == (0, 0, 0)
    assert len(advisory) == 1 and 42 not in advisory  # this tenant's transaction lock only
    assert replaced[0] != pid  # the failed tenant's connection was closed
    assert not sa.inspect(pg_env.engine()).has_schema(pg_env.namespace("third"))


def test_a_run_keeps_one_connection_and_drops_a_failed_one(pg_env, chain_copy):
    """Through the executor: tenants upgraded in one run share a connection, a tenant whose
    revision fails gets its connection discarded, and what a revision leaves in the session
    (a setting, a temporary table, a prepared statement) never reaches the next tenant."""
    api.provision(pg_env.settings, ["a", "b", "c", "d"])
    (chain_copy / "versions" / "probe.py").write_text(PROBE.format(head=head()))
    results = {r.tenant_id: r for r in api.upgrade(pg_env.settings, None)}
    assert [results[t].action for t in "abcd"] == ["upgraded", "failed", "upgraded", "upgraded"]
    seen = {}
    with pg_env.engine().connect() as conn:
        for tenant in "acd":
            row = conn.execute(sa.text(f'SELECT * FROM "{pg_env.namespace(tenant)}".probe')).one()
            seen[tenant] = row[1:]
            assert row[0] == tenant  # op.get_context().config.attributes["tenant_id"]
    assert seen["a"][0] != seen["c"][0] == seen["d"][0]  # b's connection was discarded; c and d shared one
    ours = f"docex-migrate (pid {os.getpid()})"  # the backend's own application_name
    assert {s[1:] for s in seen.values()} == {(ours, 0, 0)}  # nothing left by the tenant before


PROBE = '''"""probe: records the session it runs in, then litters it; fails for tenant b

Revision ID: probe
Revises: {head}
"""
from alembic import op

revision = "probe"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tenant = op.get_context().config.attributes["tenant_id"]
    op.execute("CREATE TABLE probe AS SELECT CAST(:tenant AS text) AS tenant, pg_backend_pid() AS pid,"
               " current_setting('application_name') AS application,"
               " (SELECT count(*) FROM pg_class WHERE relpersistence = 't') AS temporary,"
               " (SELECT count(*) FROM pg_prepared_statements) AS prepared".replace(":tenant", repr(tenant)))
    op.execute("SET application_name = 'littered'")
    op.execute("CREATE TEMPORARY TABLE litter (x int)")
    op.execute("PREPARE litter AS SELECT 1")
    if tenant == "b":
        raise RuntimeError("tenant b fails")


def downgrade() -> None:
    op.drop_table("probe")
'''


def test_a_commit_the_server_refuses_fails_that_tenant_alone(pg_env, chain_copy):
    """The COMMIT is ours (it travels with the session's reset): a transaction the server
    refuses to commit (a deferred foreign key broken in tenant b) fails that tenant, rolled back
    and still at its revision, and the next tenant gets a fresh connection and goes ahead."""
    api.provision(pg_env.settings, ["a", "b", "c"])
    before = head()
    (chain_copy / "versions" / "deferred.py").write_text(DEFERRED.format(head=before))
    results = {r.tenant_id: r for r in api.upgrade(pg_env.settings, None)}
    assert [results[t].action for t in "abc"] == ["upgraded", "failed", "upgraded"], [r.message for r in results.values()]
    assert "foreign key" in results["b"].message
    assert [s.revision for s in api.status(pg_env.settings, ["a", "b", "c"])] == ["deferred", before, "deferred"]
    inspector = sa.inspect(pg_env.engine())
    assert [inspector.has_table("child", schema=pg_env.namespace(t)) for t in "abc"] == [True, False, True]


DEFERRED = '''"""deferred: a foreign key checked at COMMIT, broken in tenant b only

Revision ID: deferred
Revises: {head}
"""
from alembic import op

revision = "deferred"
down_revision = "{head}"
branch_labels = None
depends_on = None
replayable = False  # it reads the tenant id


def upgrade() -> None:
    op.execute("CREATE TABLE parent (id int PRIMARY KEY)")
    op.execute("CREATE TABLE child (parent_id int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)")
    op.execute("INSERT INTO child VALUES (1)")
    if op.get_context().config.attributes["tenant_id"] != "b":
        op.execute("INSERT INTO parent VALUES (1)")


def downgrade() -> None:
    op.execute("DROP TABLE child")
    op.execute("DROP TABLE parent")
'''

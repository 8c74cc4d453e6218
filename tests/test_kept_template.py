"""PostgreSQL keeps the proven head dump in the tool's own schema (docex_migrate.fresh_templates),
so that a command reuses it instead of two pg_dumps that read the whole catalog: only for the
chain (and role, server, settings) it was built for, never when its content does not match its
digest, built once when two commands want it at once, and never a command's failure."""

from __future__ import annotations

import shutil
import threading
import uuid

import pytest
import sqlalchemy as sa
from helpers import head, migrate_to, tenant_snapshot, version_of
from test_fresh import EXTRAS, _assert_replayed_equals_migrated

from docex_migrate import api, fresh, load_settings
from docex_migrate import chain as chain_module
from docex_migrate.backends import backend_for
from docex_migrate.backends.postgresql import HeadDump
from docex_migrate.backends.postgresql.kept_template import _ENVIRONMENT, TABLE
from docex_migrate.chain import load_chain
from docex_migrate.fresh import build_template

pytestmark = pytest.mark.postgres

NEXT = '''"""next: a revision after the head, so the chain is another one

Revision ID: next
Revises: HEAD_REVISION
"""
from alembic import op

revision = "next"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE next_step (id integer PRIMARY KEY)")


def downgrade() -> None:
    op.execute("DROP TABLE next_step")
'''


@pytest.fixture(autouse=True)
def _needs_pg_dump() -> None:
    if not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")


def _new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the next command starts with: nothing derived from the chain in memory."""
    monkeypatch.setattr(chain_module, "_DERIVED", {})


def _without_pg_dump(env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(env.workdir / "no-bin"))


def _kept_rows(env) -> list[tuple[str, str]]:
    """The kept rows of the chain in use (other tests of the run keep theirs in the same database)."""
    query = sa.text(f"SELECT chain, sql FROM {TABLE} WHERE chain = :chain ORDER BY made_at")
    with env.engine().connect() as conn:
        return [(row[0], row[1]) for row in conn.execute(query, {"chain": load_chain().fingerprint})]


def test_a_later_command_reuses_the_kept_dump_only_for_its_own_chain(pg_env, chain_copy, monkeypatch):
    """The first provision builds and keeps the head dump; the next command gets it without
    pg_dump at all (none on PATH), and its tenant equals one the chain migrates. Once the chain
    has another revision the kept dump is not used: without pg_dump the new chain's tenants get
    its recording, at the new head."""
    api.provision(pg_env.settings, ["first-a", "first-b"])
    ((old_chain, _),) = _kept_rows(pg_env)
    assert old_chain == load_chain().fingerprint

    _new_process(monkeypatch)
    with monkeypatch.context() as no_pg_dump:
        _without_pg_dump(pg_env, no_pg_dump)
        assert isinstance(fresh.template(pg_env.settings, load_chain()), HeadDump)
        results = api.provision(pg_env.settings, ["reused-a", "reused-b"])
    assert [r.action for r in results] == ["provisioned", "provisioned"]
    migrate_to(pg_env, "migrated", head())
    assert tenant_snapshot(pg_env, "reused-a") == tenant_snapshot(pg_env, "migrated")

    (chain_copy / "versions" / "next.py").write_text(NEXT.replace("HEAD_REVISION", head()))
    _new_process(monkeypatch)
    with monkeypatch.context() as no_pg_dump:
        _without_pg_dump(pg_env, no_pg_dump)
        assert isinstance(fresh.template(pg_env.settings, load_chain()), list)  # not the old chain's dump
        (result,) = api.provision(pg_env.settings, ["after-next"])
    assert result.action == "provisioned" and version_of(pg_env, "after-next") == ("next",)


def test_a_tenant_from_the_kept_dump_has_the_full_catalog_of_a_migrated_one(pg_env, chain_copy, monkeypatch):
    """Functions, triggers, grants, comments, sequences, views and rows: what another command
    kept is, to the last line of pg_dump, what the chain makes."""
    (chain_copy / "versions" / "extras.py").write_text(EXTRAS.replace("HEAD_REVISION", head()))
    api.provision(pg_env.settings, ["builder-a", "builder-b"])
    _new_process(monkeypatch)
    with monkeypatch.context() as no_pg_dump:
        _without_pg_dump(pg_env, no_pg_dump)
        results = api.provision(pg_env.settings, ["replayed", "other"])
        assert isinstance(fresh.template(pg_env.settings, load_chain()), HeadDump)
    assert [r.action for r in results] == ["provisioned", "provisioned"]
    _assert_replayed_equals_migrated(pg_env)


def test_a_new_tenant_on_first_access_gets_the_kept_dump(pg_env, chain_copy, monkeypatch):
    """ensure_tenant of one new tenant builds no template, but uses the one a provision kept."""
    api.provision(pg_env.settings, ["one", "two"])
    _new_process(monkeypatch)
    api.ensure_tenant("on-first-access", pg_env.settings)
    assert isinstance(fresh.template(pg_env.settings, load_chain(), fresh_tenants=1), HeadDump)
    migrate_to(pg_env, "migrated", head())
    assert tenant_snapshot(pg_env, "on-first-access") == tenant_snapshot(pg_env, "migrated")
    assert version_of(pg_env, "on-first-access") == (head(),)


@pytest.mark.parametrize(
    "tampering",
    [
        "sql = sql || 'CREATE TABLE planted (id integer);'",  # edited
        "sql = left(sql, length(sql) / 2)",  # cut short
        "digest = md5(digest)",  # a digest that is not the content's
    ],
)
def test_a_kept_dump_that_does_not_match_its_digest_is_rebuilt(pg_env, chain_copy, monkeypatch, tampering):
    api.provision(pg_env.settings, ["one", "two"])
    ((_, good_sql),) = _kept_rows(pg_env)
    with pg_env.engine().begin() as conn:
        conn.execute(sa.text(f"UPDATE {TABLE} SET {tampering} WHERE chain = :chain"), {"chain": load_chain().fingerprint})

    _new_process(monkeypatch)
    with monkeypatch.context() as no_pg_dump:  # not trusted: without pg_dump, the recording
        _without_pg_dump(pg_env, no_pg_dump)
        assert isinstance(fresh.template(pg_env.settings, load_chain(), fresh_tenants=1), type(None))
        assert isinstance(fresh.template(pg_env.settings, load_chain()), list)
    _new_process(monkeypatch)
    results = api.provision(pg_env.settings, ["three", "four"])  # with pg_dump: built and kept again
    assert [r.action for r in results] == ["provisioned", "provisioned"]
    ((_, kept_sql),) = _kept_rows(pg_env)
    assert "planted" not in kept_sql and len(kept_sql) == len(good_sql)
    migrate_to(pg_env, "migrated", head())
    assert tenant_snapshot(pg_env, "three") == tenant_snapshot(pg_env, "migrated")
    with pg_env.engine().connect() as conn:
        planted = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{pg_env.namespace("three")}".planted'}).scalar()
    assert planted is None


@pytest.mark.parametrize("first_in_the_database", [True, False])
def test_two_commands_building_at_once_build_it_once(pg_env, chain_copy, first_in_the_database):
    """Under the key's advisory lock the second waits for the first and finds its dump, also
    when neither found the table it is kept in."""
    if first_in_the_database:
        with pg_env.engine().begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
    chain = load_chain()
    fingerprint = f"concurrent-{uuid.uuid4().hex}"
    builds: list[int] = []
    got: list[object] = []
    barrier = threading.Barrier(2)

    def command() -> None:
        backend = backend_for(pg_env.settings)
        try:

            def build():
                builds.append(1)
                return build_template(backend, chain)

            barrier.wait()
            got.append(backend.kept_fresh(fingerprint, build))
        finally:
            backend.dispose()

    threads = [threading.Thread(target=command) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(got) == 2
    assert all(isinstance(t, HeadDump) for t in got) and got[0] == got[1]


def test_a_role_that_may_not_keep_the_dump_still_provisions(pg_env, chain_copy, monkeypatch):
    """The tool's schema belongs to someone else and grants nothing: the dump is built for the
    process alone, and tenants are provisioned as before."""
    role = f"provisioner_{uuid.uuid4().hex[:8]}"
    database = pg_env.url.database
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f'GRANT CREATE, CONNECT ON DATABASE "{database}" TO {role}')
        conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS docex_migrate")
    try:
        monkeypatch.setenv("DOCEX_DATABASE_URL", pg_env.url.set(username=role, password=None).render_as_string(False))
        settings = load_settings()
        results = api.provision(settings, ["limited-a", "limited-b"])
        assert [r.action for r in results] == ["provisioned", "provisioned"]
        assert isinstance(fresh.template(settings, load_chain()), HeadDump)
        assert version_of(pg_env, "limited-a") == (head(),)
    finally:
        with pg_env.engine().begin() as conn:
            for tenant in ("limited-a", "limited-b"):
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{pg_env.namespace(tenant)}" CASCADE')
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


def test_the_key_is_read_by_index(pg_env):
    """What the key reads from the catalog (default privileges, the role) is an index lookup."""
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {_ENVIRONMENT.text}").scalars())
    assert "Seq Scan" not in plan, plan

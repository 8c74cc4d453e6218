"""Fresh tenants get the chain's own recorded statements replayed: the same result as running
the chain, data and alembic_version included, unless a revision says it cannot be replayed."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from helpers import applied, head, migrate_to, tenant_snapshot, version_of
from test_reliability import STEPS

from docex_migrate import api, fresh
from docex_migrate.chain import SCRIPT_LOCATION_ENV, load_chain

ROOT = Path(__file__).resolve().parents[1]


def test_replayed_tenant_equals_a_tenant_migrated_by_the_chain(env):
    assert fresh.template(env.settings, load_chain())  # the fast path is in use
    (result,) = api.provision(env.settings, ["replayed"])
    assert result.action == "provisioned"
    migrate_to(env, "migrated", head())
    assert tenant_snapshot(env, "replayed") == tenant_snapshot(env, "migrated")
    assert version_of(env, "replayed") == version_of(env, "migrated") == (head(),)


def test_replay_includes_the_data_revisions_write(env, monkeypatch):
    monkeypatch.setenv(SCRIPT_LOCATION_ENV, str(STEPS))
    (result,) = api.provision(env.settings, ["seeded"])
    assert result.action == "provisioned"
    assert applied(env, "seeded") == ["r1", "r2", "r3"]
    assert version_of(env, "seeded") == ("r3",)


def test_a_revision_can_turn_replay_off(env, chain_copy):
    s7 = chain_copy / "versions" / f"{head()}.py"
    s7.write_text(s7.read_text() + "\nreplayable = False  # e.g. it reads the tenant id\n")
    assert fresh.template(env.settings, load_chain()) is None
    (result,) = api.provision(env.settings, ["slow_path"])
    assert result.action == "provisioned" and version_of(env, "slow_path") == (head(),)


EXTRAS = '''"""extras: what reflection cannot see, for the full-catalog comparison of replayed tenants

Revision ID: extras
Revises: HEAD_REVISION
"""
from alembic import op

revision = "extras"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE audit (id integer PRIMARY KEY, note text)")
    op.execute("INSERT INTO audit VALUES (1, '100% seeded')")
    op.execute("CREATE TRIGGER audit_keep BEFORE DELETE ON audit FOR EACH ROW WHEN OLD.id = 1 BEGIN SELECT RAISE(ABORT, 'kept'); END"
               if op.get_bind().dialect.name == "sqlite" else "SELECT 1")
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SEQUENCE audit_seq START 7")
    op.execute("CREATE VIEW audit_notes AS SELECT note FROM audit")
    op.execute(
        "CREATE FUNCTION audit_stamp() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN NEW.note := format('%s (%s)', NEW.note, TG_OP); RETURN NEW; END $$"
    )
    op.execute("CREATE TRIGGER audit_stamp BEFORE INSERT OR UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_stamp()")
    op.execute("COMMENT ON TABLE audit IS 'what the 100% replay must keep'")
    op.execute("COMMENT ON FUNCTION audit_stamp() IS 'stamps notes'")
    op.execute("GRANT SELECT ON audit, audit_notes TO PUBLIC")
    op.execute("INSERT INTO audit VALUES (2, 'through the trigger')")


def downgrade() -> None:
    op.execute("DROP TABLE audit CASCADE")
'''


def _full_catalog(env, tenant_id: str) -> list[str]:
    """Everything in the tenant's namespace, rows included, with its name taken out: pg_dump of
    the schema (functions, triggers, grants, comments, sequences, views, data), or SQLite's own
    dump of the file. SQLite's is compared up to order (statements, and the clauses of each), which
    carries no meaning there and varies even between two tenants migrated by the chain: Alembic's
    batch rebuilds recreate a table's foreign keys and indexes in no fixed order."""
    if env.kind == "sqlite":
        with closing(sqlite3.connect(env.namespace(tenant_id))) as db:
            return sorted(repr(sorted(line.strip().rstrip(",") for line in entry.splitlines())) for entry in db.iterdump())
    schema, url = env.namespace(tenant_id), env.url
    dump = subprocess.run(
        ["pg_dump", "--no-owner", "--schema", schema, url.set(drivername="postgresql").render_as_string(False)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        line.replace(schema, "TENANT")
        for line in dump.splitlines()
        if line and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]


def test_replay_is_exact_for_the_whole_catalog(env, chain_copy):
    """A revision that creates what reflection cannot see (a function with '%' in its body, a
    trigger, comments, grants, a sequence, a view, rows written through the trigger): the
    replayed tenant's full dump equals that of a tenant migrated by the chain."""
    if env.kind == "postgres" and not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    (chain_copy / "versions" / "extras.py").write_text(EXTRAS.replace("HEAD_REVISION", head()))
    assert fresh.template(env.settings, load_chain())  # the fast path is in use
    (result,) = api.provision(env.settings, ["replayed"])
    assert result.action == "provisioned"
    migrate_to(env, "migrated", "extras")
    replayed, migrated = _full_catalog(env, "replayed"), _full_catalog(env, "migrated")
    assert replayed == migrated
    assert any("through the trigger (INSERT)" in line for line in replayed) or env.kind == "sqlite"
    assert any("100% seeded" in line for line in replayed)

"""Fresh tenants get what the chain produced on a scratch namespace (PostgreSQL: the head
schema's pg_dump, else the chain's recorded statements; SQLite: a copy of the head file): the
same result as running the chain, data and alembic_version included, unless a revision says it
cannot be replayed."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from helpers import STEPS, applied, head, migrate_to, tenant_snapshot, version_of

from docex_migrate import api, fresh, load_settings
from docex_migrate.backends.postgresql import SCRATCH_PREFIX, HeadDump
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
    assert fresh.template(env.settings, load_chain())
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


def test_a_single_fresh_tenant_runs_the_chain_without_building_a_template(env, chain_copy):
    """Building a template costs at least a run of the chain: one tenant alone runs the chain."""
    (result,) = api.provision(env.settings, ["alone"])
    assert result.action == "provisioned" and version_of(env, "alone") == (head(),)
    assert not load_chain().has_cached(f"fresh-template:{env.settings.database_type}")


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
        [
            "pg_dump",
            "--no-owner",
            "--schema",
            f'"{schema}"',
            "--strict-names",
            url.set(drivername="postgresql").render_as_string(False),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        line.replace(schema, "TENANT")
        for line in dump.splitlines()
        if line and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]


def _assert_replayed_equals_migrated(env, replayed: str = "replayed", migrated: str = "migrated") -> None:
    """``replayed`` (provisioned already) has the full catalog of a tenant the chain migrates."""
    migrate_to(env, migrated, "extras")
    replayed_dump, migrated_dump = _full_catalog(env, replayed), _full_catalog(env, migrated)
    assert replayed_dump == migrated_dump
    assert any("through the trigger (INSERT)" in line for line in replayed_dump) or env.kind == "sqlite"
    assert any("100% seeded" in line for line in replayed_dump)


def test_replay_is_exact_for_the_whole_catalog(env, chain_copy):
    """A revision that creates what reflection cannot see (a function with '%' in its body, a
    trigger, comments, grants, a sequence, a view, rows written through the trigger): the
    replayed tenant's full dump equals that of a tenant migrated by the chain."""
    if env.kind == "postgres" and not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    (chain_copy / "versions" / "extras.py").write_text(EXTRAS.replace("HEAD_REVISION", head()))
    template = fresh.template(env.settings, load_chain())
    assert isinstance(template, HeadDump if env.kind == "postgres" else Path)  # the head schema, not the history
    assert "_timeout" not in getattr(template, "sql", "")  # pg_dump's would lift the tenant's own
    (result,) = api.provision(env.settings, ["replayed"])
    assert result.action == "provisioned"
    _assert_replayed_equals_migrated(env)


@pytest.mark.postgres
def test_without_pg_dump_fresh_tenants_replay_the_recording_exactly(pg_env, chain_copy, monkeypatch):
    if not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed (needed to compare the tenants)")
    (chain_copy / "versions" / "extras.py").write_text(EXTRAS.replace("HEAD_REVISION", head()))
    with monkeypatch.context() as no_pg_dump:
        no_pg_dump.setenv("PATH", str(pg_env.workdir / "no-bin"))
        template = fresh.template(pg_env.settings, load_chain())
        assert isinstance(template, list) and template  # the recorded statements
        (result,) = api.provision(pg_env.settings, ["replayed"])
        assert result.action == "provisioned"
    _assert_replayed_equals_migrated(pg_env)


@pytest.mark.postgres
def test_an_odd_schema_template_gets_the_head_schema_and_no_scratch_schema_stays(pg_env, chain_copy):
    """Mixed case and '-' in the schema (quoted everywhere the scratch schema's name was), next
    to a lower-case decoy: tenants provisioned together get the head dump, equal to a migrated
    one, the decoy is untouched, and the scratch schemas are gone."""
    if not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    (chain_copy / "versions" / "extras.py").write_text(EXTRAS.replace("HEAD_REVISION", head()))
    config = yaml.safe_load(pg_env.config_file.read_text())
    prefix = config["database"]["postgres"]["schema_template"].split("{")[0]
    config["database"]["postgres"]["schema_template"] = f"Odd-{prefix}{{tenant_id}}"
    pg_env.config_file.write_text(yaml.safe_dump(config))
    pg_env.settings = load_settings()
    decoy = pg_env.namespace("acme-corp").lower()
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{decoy}"')
    try:
        results = api.provision(pg_env.settings, ["acme-corp", "replayed"])
        assert [r.action for r in results] == ["provisioned", "provisioned"]
        assert isinstance(fresh.template(pg_env.settings, load_chain()), HeadDump)
        _assert_replayed_equals_migrated(pg_env, "acme-corp", "migrated-corp")
        with pg_env.engine().connect() as conn:
            schemas = set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars())
            decoy_tables = conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": decoy}).scalar()
        assert {pg_env.namespace(t) for t in ("acme-corp", "replayed")} <= schemas
        assert decoy_tables == 0
        assert not [s for s in schemas if s.startswith(SCRATCH_PREFIX)]
    finally:
        with pg_env.engine().begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{decoy}" CASCADE')


WHEREAMI = '''"""whereami: a row naming the schema it was written in (which the contract forbids)

Revision ID: whereami
Revises: HEAD_REVISION
"""
from alembic import op

revision = "whereami"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE whereami AS SELECT current_schema() AS name")


def downgrade() -> None:
    op.execute("DROP TABLE whereami")
'''


@pytest.mark.postgres
def test_a_head_dump_the_proof_refutes_gives_way_to_the_recording(pg_env, chain_copy):
    """The scratch schema's name in a row: the proof's replay writes the second scratch schema's
    (quoted) name there, its dump differs, and tenants get the recorded statements instead."""
    if not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    (chain_copy / "versions" / "whereami.py").write_text(WHEREAMI.replace("HEAD_REVISION", head()))
    assert isinstance(fresh.template(pg_env.settings, load_chain()), list)
    (result,) = api.provision(pg_env.settings, ["acme"])
    assert result.action == "provisioned"
    schema = pg_env.namespace("acme")
    with pg_env.engine().connect() as conn:
        assert conn.execute(sa.text(f'SELECT name FROM "{schema}".whereami')).scalar() == schema


@pytest.mark.postgres
def test_provisioning_never_drops_a_tenant_whose_schema_looks_like_a_scratch_set(pg_env):
    """Building the head dump sweeps abandoned scratch sets (dxcheck_<8 hex>_*, no session holding
    their lock). A valid tenant can have such a schema (template 'dx{tenant_id}', tenant id
    'check_0123abcd_acme'): provisioning two other tenants must leave it and its data alone."""
    if not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    config = yaml.safe_load(pg_env.config_file.read_text())
    config["database"]["postgres"]["schema_template"] = "dx{tenant_id}"
    pg_env.config_file.write_text(yaml.safe_dump(config))
    pg_env.settings = load_settings()
    victim = "check_0123abcd_acme"
    assert pg_env.namespace(victim) == "dxcheck_0123abcd_acme"
    try:
        (result,) = api.provision(pg_env.settings, [victim])  # one fresh tenant: the chain, no template
        assert result.action == "provisioned"
        results = api.provision(pg_env.settings, ["check-new-1", "check-new-2"])  # builds the head dump
        assert [r.action for r in results] == ["provisioned", "provisioned"]
        assert pg_env.exists(victim), "the tenant's schema was dropped as an abandoned scratch set"
        assert version_of(pg_env, victim) == (head(),)
    finally:
        with pg_env.engine().begin() as conn:
            for tenant in (victim, "check-new-1", "check-new-2"):
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{pg_env.namespace(tenant)}" CASCADE')

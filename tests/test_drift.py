"""verify: every tenant is exactly the revision it is stamped at, proven fleet-wide from catalog
fingerprints (one comparison per distinct catalog); repair of index drift; upgrade
--verify-first; the fleet-drift check. Real SQLite files and a real PostgreSQL database, drifted
by hand with real DDL."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest
import sqlalchemy as sa
from helpers import (
    DOCEX_2_9_10,
    cli,
    corrupt,
    grant_read,
    head,
    migrate_to,
    recognised_as,
    reported,
    template_only_config,
    tenant_engine,
    tenant_snapshot,
    version_of,
)
from test_adoption import build_legacy, hybrid_ddl, legacy_ddl

from docex_migrate import adoption, api, checks, drift
from docex_migrate.api import provision
from docex_migrate.backends import backend_for
from docex_migrate.backends.postgresql import catalog_reads as pg_backend
from docex_migrate.chain import load_chain
from docex_migrate.snapshot import snapshot

HEAD = load_chain().head
N = 30
INDEX_DROPPED, COLUMN_ADDED, TYPE_CHANGED = "t03", "t11", "t22"
EXPECTED_DIFF = {
    INDEX_DROPPED: "missing tables.file_history.indexes.idx_file_history_document_id: "
    "{'columns': [['document_id', 'asc']], 'unique': False}",
    COLUMN_ADDED: "extra tables.docbasket.columns.owner: {'type': 'VARCHAR(64)', 'nullable': True, 'default': None}",
    TYPE_CHANGED: "tables.operations.columns.operation_type.type: expected 'VARCHAR(100)', found 'TEXT'",
}
NEW_REVISION = '''"""a nullable note on document

Revision ID: s8_note
Revises: s7_docex_2_9_10
"""
import sqlalchemy as sa

from alembic import op

revision = "s8_note"
down_revision = "s7_docex_2_9_10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("document", sa.Column("note", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("document", "note")  # SQLite 3.35+: no rebuild (a batch rebuild would lose DESC on indexes)
'''


def rows_of(result) -> dict[str, dict]:
    """verify --json (a list), or verify --repair --json (a changing command: one report object)."""
    found = json.loads(result.stdout)
    return {r["tenant_id"]: r for r in (reported(result.stdout) if isinstance(found, dict) else found)}


def by_hand(env, tenant_id: str, *statements: str) -> None:
    """DDL run on the tenant the way an operator would, outside docex-migrate."""
    engine = tenant_engine(env, tenant_id)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def sqlite_change_column_type(path, table: str, column: str, old: str, new: str) -> None:
    """What a person does on SQLite to change a column's type: rebuild the table (create the new
    shape, copy the rows, drop the old one, rename, recreate its indexes), foreign keys off."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        create = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
        indexes = [
            r[0]
            for r in db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
            )
        ]
        assert f"{column} {old}" in create
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("BEGIN")
        db.execute(
            create.replace(f"CREATE TABLE {table} ", f"CREATE TABLE {table}_new ").replace(f"{column} {old}", f"{column} {new}")
        )
        db.execute(f"INSERT INTO {table}_new SELECT * FROM {table}")
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
        for statement in indexes:
            db.execute(statement)
        db.execute("COMMIT")
    finally:
        db.close()


def drift_by_hand(env) -> None:
    """Three tenants altered by hand, three different ways."""
    by_hand(env, INDEX_DROPPED, "DROP INDEX idx_file_history_document_id")
    by_hand(env, COLUMN_ADDED, "ALTER TABLE docbasket ADD COLUMN owner VARCHAR(64)")
    if env.kind == "sqlite":
        sqlite_change_column_type(
            env.workdir / env.namespace(TYPE_CHANGED), "operations", "operation_type", "VARCHAR(100)", "TEXT"
        )
    else:
        by_hand(env, TYPE_CHANGED, "ALTER TABLE operations ALTER COLUMN operation_type TYPE TEXT")


def fleet(env, revision: str | None = None) -> list[str]:
    """N tenants at head (or provisioned, then taken down to ``revision``), three of them drifted."""
    tenants = [f"t{i:02d}" for i in range(N)]
    result = cli("provision", *tenants)
    assert result.exit_code == 0, result.output
    if revision:
        assert cli("downgrade", revision, "--all-tenants", "--yes").exit_code == 0
    drift_by_hand(env)
    return tenants


def test_verify_lists_exactly_the_drifted_tenants_and_repair_fixes_only_the_index(env, monkeypatch):
    tenants = fleet(env)
    reflected: list[str] = []
    real = drift.namespace_snapshot
    monkeypatch.setattr(drift, "namespace_snapshot", lambda backend, t: reflected.append(t) or real(backend, t))

    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert set(rows) == set(tenants)
    assert {t for t, r in rows.items() if r["state"] != "ok"} == set(EXPECTED_DIFF)
    assert {t: rows[t]["diff"] for t in EXPECTED_DIFF} == {t: [line] for t, line in EXPECTED_DIFF.items()}
    assert {t: rows[t]["repairable"] for t in EXPECTED_DIFF} == {INDEX_DROPPED: True, COLUMN_ADDED: False, TYPE_CHANGED: False}
    assert rows[INDEX_DROPPED]["repairs"] == ["create index idx_file_history_document_id on file_history(document_id)"]
    # 27 identical tenants are one catalog: one reflection for them, one per drifted tenant.
    assert len({rows[t]["fingerprint"] for t in tenants if t not in EXPECTED_DIFF}) == 1
    assert len(reflected) == 4

    human = cli("verify", "--all-tenants")
    assert human.exit_code == 1
    for tenant_id, line in EXPECTED_DIFF.items():
        assert f"  {tenant_id}: {line}" in human.stdout
    assert "3 drifted, 27 ok" in human.stdout

    refused = cli("verify", "--all-tenants", "--repair")
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert rows_of(cli("verify", "--all-tenants", "--json"))[INDEX_DROPPED]["state"] == "drifted"

    before = {t: tenant_snapshot(env, t) for t in (COLUMN_ADDED, TYPE_CHANGED)}
    result = cli("verify", "--all-tenants", "--repair", "--yes", "--json")
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert rows[INDEX_DROPPED]["state"] == "repaired"
    assert {rows[t]["state"] for t in (COLUMN_ADDED, TYPE_CHANGED)} == {"drifted"}
    assert {t: tenant_snapshot(env, t) for t in before} == before  # only reported, never touched

    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 1
    rows = rows_of(result)
    assert {t for t, r in rows.items() if r["state"] != "ok"} == {COLUMN_ADDED, TYPE_CHANGED}
    assert rows[INDEX_DROPPED]["fingerprint"] == rows["t00"]["fingerprint"]  # back to the fleet's catalog
    assert tenant_snapshot(env, INDEX_DROPPED) == tenant_snapshot(env, "t00")

    one = cli("verify", "--tenant", "t00", "--tenant", INDEX_DROPPED)
    assert one.exit_code == 0 and "all 2 tenant(s) are exactly their revision" in one.stdout
    shards = [rows_of(cli("verify", "--all-tenants", "--shard", f"{k}/3", "--json")) for k in range(3)]
    assert sorted(t for shard in shards for t in shard) == sorted(tenants)


def test_upgrade_verify_first_migrates_the_rest_and_refuses_the_drifted(env, chain_copy):
    (chain_copy / "versions" / "s8_note.py").write_text(NEW_REVISION.replace("s7_docex_2_9_10", HEAD))
    tenants = fleet(env, HEAD)  # at the old head, with a new revision on top

    result = cli("upgrade", "--all-tenants", "--verify-first", "--max-failures", "3", "--json")
    assert result.exit_code == 1, result.output
    actions = {r["tenant_id"]: r["action"] for r in reported(result.stdout)}
    assert {t for t, a in actions.items() if a == "drifted"} == set(EXPECTED_DIFF)
    assert {a for t, a in actions.items() if t not in EXPECTED_DIFF} == {"not-run"}  # 3 refusals reach the limit
    assert {version_of(env, t) for t in tenants} == {(HEAD,)}

    result = cli("upgrade", "--all-tenants", "--verify-first", "--json")
    assert result.exit_code == 1, result.output
    rows = {r["tenant_id"]: r for r in reported(result.stdout)}
    assert {t for t, r in rows.items() if r["action"] == "upgraded"} == set(tenants) - set(EXPECTED_DIFF)
    for tenant_id, line in EXPECTED_DIFF.items():
        assert rows[tenant_id]["action"] == "drifted" and rows[tenant_id]["details"] == [line]
        assert version_of(env, tenant_id) == (HEAD,)
    assert {version_of(env, t) for t in tenants if t not in EXPECTED_DIFF} == {("s8_note",)}
    human = cli("upgrade", "--all-tenants", "--verify-first")
    assert human.exit_code == 1 and "DRIFTED" in human.stdout and "3 drifted" in human.stdout

    # The migrated tenants are exactly the new revision; the drifted ones still theirs, plus the drift.
    rows = rows_of(cli("verify", "--all-tenants", "--json"))
    assert {t for t, r in rows.items() if r["state"] != "ok"} == set(EXPECTED_DIFF)
    assert {r["revision"] for t, r in rows.items() if t not in EXPECTED_DIFF} == {"s8_note"}


def test_tenants_at_older_revisions_are_compared_with_their_own_revision(env):
    assert cli("provision", "at-head", "at-s6", "at-s4", "at-s1", "at-base", "s4-drifted").exit_code == 0
    for tenant_id, revision in (
        ("at-s6", "s6_docex_2_8_8"),
        ("at-s4", "s4_docex_2_6_1"),
        ("s4-drifted", "s4_docex_2_6_1"),
        ("at-s1", "s1_docex_0_2_0"),
        ("at-base", None),
    ):
        migrate_to(env, tenant_id, revision, downgrade=True)
    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert {t: (r["revision"], r["state"]) for t, r in rows.items()} == {
        "at-head": (HEAD, "ok"),
        "at-s6": ("s6_docex_2_8_8", "ok"),
        "at-s4": ("s4_docex_2_6_1", "ok"),
        "s4-drifted": ("s4_docex_2_6_1", "ok"),
        "at-s1": ("s1_docex_0_2_0", "ok"),
        "at-base": (None, "ok"),
    }
    # An index S4 has and S6 narrowed: against S4 only its absence is drift, nothing of the head's.
    by_hand(env, "s4-drifted", "DROP INDEX idx_document_metadata_key_value")
    by_hand(env, "at-base", "CREATE TABLE leftover (id INTEGER PRIMARY KEY)")
    rows = rows_of(cli("verify", "--all-tenants", "--json"))
    assert [line.split(":")[0] for line in rows["s4-drifted"]["diff"]] == [
        "missing tables.document_metadata.indexes.idx_document_metadata_key_value"
    ]
    assert rows["s4-drifted"]["repairable"] is True
    assert [line.split(":")[0] for line in rows["at-base"]["diff"]] == ["extra tables.leftover"]
    assert {t for t, r in rows.items() if r["state"] != "ok"} == {"s4-drifted", "at-base"}
    result = cli("verify", "--tenant", "s4-drifted", "--repair", "--yes")
    assert result.exit_code == 0, result.output
    assert version_of(env, "s4-drifted") == ("s4_docex_2_6_1",)
    index = tenant_snapshot(env, "s4-drifted")["tables"]["document_metadata"]["indexes"]["idx_document_metadata_key_value"]
    assert index["columns"] == [["key", "asc"], ["value", "asc"]]  # S4's definition, not the head's narrowed one
    assert rows_of(cli("verify", "--tenant", "s4-drifted", "--json"))["s4-drifted"]["state"] == "ok"


def test_docex_made_tenants_adopted_at_every_generation_verify_clean(env):
    """DocEX's own schemas (the reference dumps), every generation and a known hybrid, adopted."""
    made = ["s1_docex_0_2_0", "s3_docex_2_2_1", "s5_docex_2_8_4", "s6_docex_2_8_8", DOCEX_2_9_10]
    for i, revision in enumerate(made):
        build_legacy(env, f"gen{i}", legacy_ddl(env, revision, f"gen{i}"))
    generations = [recognised_as(env.settings, revision) for revision in made]
    build_legacy(env, "hybrid", hybrid_ddl(env, "s6-without-indexes", "hybrid"))
    before = rows_of(cli("verify", "--all-tenants", "--json"))
    assert {t: (r["state"], r["matches"], r["adopt"]) for t, r in before.items()} == {
        **{f"gen{i}": ("unversioned", rev, "adopt") for i, rev in enumerate(generations)},
        "hybrid": ("unversioned", "s6_docex_2_8_8", "repair"),
    }
    assert cli("adopt", "--all-tenants").exit_code == 0
    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert {t: (r["revision"], r["state"]) for t, r in rows.items()} == {
        **{f"gen{i}": (rev, "ok") for i, rev in enumerate(generations)},
        "hybrid": ("s6_docex_2_8_8", "ok"),
    }


def test_every_other_state_is_reported_as_status_reports_it(env):
    assert cli("provision", "good", "double").exit_code == 0
    corrupt(env, "broken")
    by_hand(env, "double", "INSERT INTO alembic_version VALUES ('s6_docex_2_8_8')")
    build_legacy(env, "legacy", legacy_ddl(env, "s5_docex_2_8_4", "legacy"))
    result = cli(
        "verify",
        "--tenant",
        "good",
        "--tenant",
        "double",
        "--tenant",
        "broken",
        "--tenant",
        "legacy",
        "--tenant",
        "nobody",
        "--json",
    )
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert {t: r["state"] for t, r in rows.items()} == {
        "good": "ok",
        "double": "corrupt",
        "broken": "unreadable",
        "legacy": "unversioned",
        "nobody": "missing",
    }
    assert (rows["legacy"]["matches"], rows["legacy"]["adopt"]) == ("s5_docex_2_8_4", "adopt")
    assert "fix it by hand to one row" in rows["double"]["error"]
    assert ("file is not a database" if env.kind == "sqlite" else "has no version_num column") in rows["broken"]["error"]
    fine = cli("verify", "--tenant", "good", "--tenant", "legacy", "--tenant", "nobody")
    assert fine.exit_code == 0, fine.output  # unversioned and missing are reported, not failures (as status)
    assert cli("verify").exit_code == 2  # neither tenants nor --all-tenants


def test_fleet_drift_check_gates_a_deploy(env):
    (result,) = checks.run_checks(env.settings, ["fleet-drift"])
    assert result.status == checks.SKIPPED and "holds no tenants" in result.message
    assert cli("provision", "acme", "globex").exit_code == 0
    assert cli("check", "--only", "fleet-drift").exit_code == 0
    by_hand(env, "globex", "ALTER TABLE docbasket ADD COLUMN owner VARCHAR(64)")
    result = cli("check", "--only", "fleet-drift", "--json")
    assert result.exit_code == 1
    (check,) = json.loads(result.stdout)["checks"]
    assert check["status"] == "failed" and "1 of 2 tenants" in check["message"]
    assert check["evidence"][0].startswith(f"globex ({env.namespace('globex')}): drifted at {HEAD}")
    assert check["evidence"][1].strip().startswith("extra tables.docbasket.columns.owner")


@pytest.mark.postgres
def test_a_repair_blocked_by_an_application_lock_takes_the_lock_timeout_it_advises(pg_env):
    """Attack on issue 24: a repair that waited on an application's lock failed saying "raise
    --lock-timeout", an option verify did not take. It takes it now: the wait is that long."""
    assert cli("provision", "held").exit_code == 0
    by_hand(pg_env, "held", "DROP INDEX idx_file_history_document_id")
    engine = tenant_engine(pg_env, "held")
    try:
        with engine.connect() as app:  # the application, mid-transaction on the table to repair
            app.exec_driver_sql("LOCK TABLE file_history IN ROW EXCLUSIVE MODE")
            failed = cli("verify", "--tenant", "held", "--repair", "--yes", "--lock-timeout", "0.2", "--json")
            assert failed.exit_code == 1, failed.output
            (row,) = rows_of(failed).values()
            assert row["state"] == "failed" and "raise --lock-timeout" in row["error"], row
            app.rollback()
    finally:
        engine.dispose()
    repaired = cli("verify", "--tenant", "held", "--repair", "--yes", "--lock-timeout", "5", "--json")
    assert repaired.exit_code == 0, repaired.output
    assert [r["state"] for r in rows_of(repaired).values()] == ["repaired"]
    refused = cli("verify", "--tenant", "held", "--lock-timeout", "-1")
    assert refused.exit_code == 2 and "lock" in refused.stderr, refused.output


@pytest.mark.postgres
def test_verify_works_with_a_role_that_may_only_read_and_creates_nothing(pg_env, reader_role, monkeypatch):
    assert cli("provision", "ok1", "drifted", "secret").exit_code == 0
    by_hand(pg_env, "drifted", "DROP INDEX idx_file_history_document_id")
    build_legacy(pg_env, "legacy", legacy_ddl(pg_env, DOCEX_2_9_10, "legacy"))
    for tenant_id in ("ok1", "drifted", "legacy"):
        grant_read(pg_env, reader_role, tenant_id)  # "secret" stays unreadable to the role
    monkeypatch.setenv("DOCEX_DATABASE_URL", pg_env.url.set(username=reader_role, password=None).render_as_string(False))
    monkeypatch.setenv("DOCEX_CONFIG", str(template_only_config(pg_env)))

    def catalog():
        with pg_env.engine().connect() as conn:
            return conn.execute(
                sa.text("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1, 2")
            ).all()

    before = catalog()
    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert {t: r["state"] for t, r in rows.items()} == {
        "ok1": "ok",
        "drifted": "drifted",
        "legacy": "unversioned",
        "secret": "unreadable",
    }
    assert (rows["legacy"]["matches"], rows["legacy"]["adopt"]) == (recognised_as(pg_env.settings, DOCEX_2_9_10), "adopt")
    assert "GRANT USAGE" in rows["secret"]["error"]
    # A repair needs more than reading: it fails for that tenant alone, changing nothing.
    result = cli("verify", "--tenant", "drifted", "--repair", "--yes", "--json")
    assert result.exit_code == 1
    (row,) = reported(result.stdout)
    assert row["state"] == "failed" and row["error"].startswith("repair failed")  # as the ledger has it
    assert catalog() == before


@pytest.mark.postgres
def test_pg_fingerprints_are_sound_across_batches_and_schema_names(pg_env, monkeypatch):
    """Same catalog, same fingerprint, whatever the schema is called (mixed case, '-') and
    whichever batch reads it; any difference the snapshot sees changes the fingerprint, even a
    default naming the tenant's own schema in a literal; column order splits groups, not verdicts."""
    template = pg_env.settings.postgres.schema_template
    settings = replace(pg_env.settings, postgres=replace(pg_env.settings.postgres, schema_template="Mixed_" + template))
    backend = backend_for(settings)
    changes = {
        "default": "ALTER TABLE doc_events ALTER COLUMN source SET DEFAULT 'other'",
        "nullable": "ALTER TABLE docbasket ALTER COLUMN description SET NOT NULL",
        "ondelete": "ALTER TABLE document DROP CONSTRAINT document_basket_id_fkey, ADD CONSTRAINT document_basket_id_fkey "
        "FOREIGN KEY (basket_id) REFERENCES docbasket (id) ON DELETE CASCADE",
        "unique": "ALTER TABLE processors ADD CONSTRAINT processors_type_key UNIQUE (type)",
        "index-order": "DROP INDEX idx_document_basket_created; CREATE INDEX idx_document_basket_created ON document (basket_id, created_at)",
        "index-unique": "DROP INDEX idx_file_history_document_id; CREATE UNIQUE INDEX idx_file_history_document_id ON file_history (document_id)",
        "enum": "CREATE TYPE mood AS ENUM ('a', 'b')",
        "sequence": "CREATE SEQUENCE counter",
        "own-name-literal": "ALTER TABLE doc_events ALTER COLUMN source SET DEFAULT '{schema}.x'",
        # Pairs that differ only in an index's predicate, expression, INCLUDE, collation, opclass.
        "predicate-a": "CREATE INDEX ix_shape ON document (name) WHERE status = 'a'",
        "predicate-b": "CREATE INDEX ix_shape ON document (name) WHERE status = 'b'",
        "expression-a": "CREATE INDEX ix_shape ON document (lower(name))",
        "expression-b": "CREATE INDEX ix_shape ON document (upper(name))",
        "include-a": "CREATE INDEX ix_shape ON document (name) INCLUDE (status)",
        "include-b": "CREATE INDEX ix_shape ON document (name) INCLUDE (path)",
        "collation-a": 'CREATE INDEX ix_shape ON document (name COLLATE "C")',
        "collation-b": 'CREATE INDEX ix_shape ON document (name COLLATE "POSIX")',
        "opclass-a": "CREATE INDEX ix_shape ON document (name text_pattern_ops)",
        "opclass-b": "CREATE INDEX ix_shape ON document (name varchar_pattern_ops)",
        "own-name-predicate": "CREATE INDEX ix_shape ON document (name) WHERE status = '{schema}.x'",
        # What else the snapshot holds (issue 23): CHECK constraints, views, triggers, functions, comments.
        "check-a": "ALTER TABLE docbasket ADD CONSTRAINT ck_shape CHECK (length(name) > 0)",
        "check-b": "ALTER TABLE docbasket ADD CONSTRAINT ck_shape CHECK (length(name) > 1)",
        "view-a": "CREATE VIEW v_shape AS SELECT name FROM docbasket",
        "view-b": "CREATE VIEW v_shape AS SELECT name FROM docbasket WHERE name IS NOT NULL",
        "function": "CREATE FUNCTION f_shape() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "trigger": "CREATE FUNCTION f_shape() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW;END$$; "
        "CREATE TRIGGER t_shape BEFORE INSERT ON docbasket FOR EACH ROW EXECUTE FUNCTION f_shape()",
        "table-comment": "COMMENT ON TABLE docbasket IS 'x'",
        "column-comment": "COMMENT ON COLUMN docbasket.name IS 'x'",
    }
    same = ["plain", "plain-2", "with-dash"]
    names = same + ["reordered"] + list(changes)
    backend_tenants = {t: backend.namespace(t) for t in names}
    assert all(not r.failed for r in provision(settings, names))
    with pg_env.engine().begin() as conn:
        for tenant_id, statements in changes.items():
            schema = backend_tenants[tenant_id]
            conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
            for statement in statements.split("; "):
                conn.exec_driver_sql(statement.replace("{schema}", schema))
        # Column order is not drift; the fingerprint covers it (more groups, never a wrong verdict).
        schema = backend_tenants["reordered"]
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        conn.exec_driver_sql("ALTER TABLE file_history DROP COLUMN internal_path")
        conn.exec_driver_sql("ALTER TABLE file_history ADD COLUMN internal_path TEXT")
    monkeypatch.setattr(pg_backend, "BATCH_SIZE", 3)
    reads = backend.read_catalogs(names)
    backend.dispose()
    fingerprints = {t: reads[t].fingerprint for t in names}
    assert all(fingerprints.values())
    assert len({fingerprints[t] for t in same}) == 1, fingerprints
    assert len(set(fingerprints.values())) == len(changes) + 2, fingerprints
    assert any(c.isupper() for c in backend_tenants["with-dash"]) and "-" in backend_tenants["with-dash"]

    rows = {r.tenant_id: r for r in api.verify(settings, names)}
    assert {t for t, r in rows.items() if r.state == drift.OK} == set(same) | {"reordered"}
    assert {t for t, r in rows.items() if r.state == drift.DRIFTED} == set(changes)
    assert rows["own-name-literal"].diff == [
        f"tables.doc_events.columns.source.default: expected \"'docex'::character varying\", "
        f"found \"'{backend_tenants['own-name-literal']}.x'::character varying\""
    ]


def test_sqlite_fingerprints_read_files_without_creating_or_writing_them(sqlite_env):
    assert cli("provision", "a", "b").exit_code == 0
    path = sqlite_env.workdir / sqlite_env.namespace("a")
    stat = path.stat()
    reads = backend_for(sqlite_env.settings).read_catalogs(["a", "b", "ghost"])
    assert reads["a"].fingerprint == reads["b"].fingerprint and reads["a"].fingerprint
    assert (reads["ghost"].state.exists, reads["ghost"].fingerprint) == (False, None)
    assert not (sqlite_env.workdir / sqlite_env.namespace("ghost")).exists()
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (stat.st_mtime_ns, stat.st_size)


# --- index shapes: expression, partial, INCLUDE, collation, DESC, NULLS, operator class -----

SHAPES_REVISION = '''"""indexes of every shape the backend allows

Revision ID: s8_shapes
Revises: {head}
"""
from alembic import op

revision = "s8_shapes"
down_revision = "{head}"
branch_labels = None
depends_on = None

NAMES = ("uq_document_live_name", "ix_docbasket_lower_name", "ix_doc_events_recent", "ix_document_name_collated")


def upgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    op.execute("CREATE UNIQUE INDEX uq_document_live_name ON document (basket_id, name) WHERE status <> 'DELETED'")
    op.execute("CREATE INDEX ix_docbasket_lower_name ON docbasket (lower(name))")
    include = " INCLUDE (status)" if postgres else ""
    op.execute(f"CREATE INDEX ix_doc_events_recent ON doc_events (document_id, event_timestamp DESC){{include}}")
    collation = '"C"' if postgres else "NOCASE"
    op.execute(f"CREATE INDEX ix_document_name_collated ON document (name COLLATE {{collation}})")


def downgrade() -> None:
    for name in NAMES:
        op.execute(f"DROP INDEX {{name}}")
'''


def look_alikes(kind: str) -> dict[str, list[str]]:
    """Tenants whose index of the revision was redefined by hand under the same name."""
    include = " INCLUDE (status)" if kind == "postgres" else ""
    alikes = {
        "no-predicate": [  # the case: the partial unique index without its WHERE
            "DROP INDEX uq_document_live_name",
            "CREATE UNIQUE INDEX uq_document_live_name ON document (basket_id, name)",
        ],
        "other-predicate": [
            "DROP INDEX uq_document_live_name",
            "CREATE UNIQUE INDEX uq_document_live_name ON document (basket_id, name) WHERE status <> 'ARCHIVED'",
        ],
        "not-unique": [
            "DROP INDEX uq_document_live_name",
            "CREATE INDEX uq_document_live_name ON document (basket_id, name) WHERE status <> 'DELETED'",
        ],
        "other-expression": [
            "DROP INDEX ix_docbasket_lower_name",
            "CREATE INDEX ix_docbasket_lower_name ON docbasket (upper(name))",
        ],
        "no-desc": [
            "DROP INDEX ix_doc_events_recent",
            f"CREATE INDEX ix_doc_events_recent ON doc_events (document_id, event_timestamp){include}",
        ],
        "no-collation": [
            "DROP INDEX ix_document_name_collated",
            "CREATE INDEX ix_document_name_collated ON document (name)",
        ],
    }
    if kind == "postgres":
        alikes["no-include"] = [
            "DROP INDEX ix_doc_events_recent",
            "CREATE INDEX ix_doc_events_recent ON doc_events (document_id, event_timestamp DESC)",
        ]
        alikes["nulls-first"] = [
            "DROP INDEX ix_doc_events_recent",
            "CREATE INDEX ix_doc_events_recent ON doc_events (document_id, event_timestamp DESC NULLS LAST) INCLUDE (status)",
        ]
    return alikes


def index_sql(env, tenant_id: str, name: str) -> str:
    """The index as the database itself states it (pg_get_indexdef; SQLite's stored statement)."""
    engine = tenant_engine(env, tenant_id)
    try:
        with engine.connect() as conn:
            if env.kind == "sqlite":
                return conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).scalar_one()
            # pretty: the table unqualified (the search_path is the tenant's), so tenants compare
            return conn.exec_driver_sql(f"SELECT pg_get_indexdef('{name}'::regclass, 0, true)").scalar_one()
    finally:
        engine.dispose()


def test_an_index_redefined_under_its_name_is_drift_and_repair_restores_it_exactly(env, chain_copy):
    """A look-alike (same name; another predicate, expression, uniqueness, order, collation,
    INCLUDE) is drift, and `verify --repair --yes` recreates the revision's own index, its
    predicate and all (it recreated a partial unique index without its WHERE, then said exact)."""
    (chain_copy / "versions" / "s8_shapes.py").write_text(SHAPES_REVISION.format(head=HEAD))
    alikes = look_alikes(env.kind)
    assert cli("provision", "pristine", *alikes).exit_code == 0
    for tenant_id, statements in alikes.items():
        by_hand(env, tenant_id, *statements)
    pristine = tenant_snapshot(env, "pristine")
    assert "WHERE" in index_sql(env, "pristine", "uq_document_live_name")

    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert {t: (r["revision"], r["state"], r["repairable"]) for t, r in rows.items() if t in alikes} == {
        t: ("s8_shapes", "drifted", True) for t in alikes
    }
    assert rows["pristine"]["state"] == "ok"
    assert len({rows[t]["fingerprint"] for t in rows}) == len(alikes) + 1  # no look-alike hides in another's group
    (line,) = rows["no-predicate"]["diff"]
    assert "tables.document.indexes.uq_document_live_name.definition: " in line and "DELETED" in line  # its WHERE
    assert any("WHERE" in repair and "create index uq_document_live_name" in repair for repair in rows["no-predicate"]["repairs"])

    result = cli("verify", "--all-tenants", "--repair", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert {t: r["state"] for t, r in rows_of(result).items() if t in alikes} == dict.fromkeys(alikes, "repaired")
    for tenant_id in alikes:
        assert tenant_snapshot(env, tenant_id) == pristine, tenant_id
    for name in ("uq_document_live_name", "ix_docbasket_lower_name", "ix_doc_events_recent", "ix_document_name_collated"):
        assert {index_sql(env, t, name) for t in alikes} == {index_sql(env, "pristine", name)}, name
    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 0, result.output
    assert len({r["fingerprint"] for r in rows_of(result).values()}) == 1  # one catalog again


def extra_indexes(kind: str) -> dict[str, str]:
    """Indexes of every shape the backend allows, added by hand to a tenant at the head."""
    extras = {
        "expression": "CREATE INDEX ix_extra ON docbasket (lower(name))",
        "partial": "CREATE UNIQUE INDEX ix_extra ON document (basket_id, name) WHERE status = 'active'",
        "desc": "CREATE INDEX ix_extra ON doc_events (event_timestamp DESC, document_id)",
        "collation": "CREATE INDEX ix_extra ON document (name COLLATE " + ('"C")' if kind == "postgres" else "NOCASE)"),
        "expression-desc": "CREATE INDEX ix_extra ON document ((name || '-' || status) DESC)",
    }
    if kind == "postgres":
        extras |= {
            "include": "CREATE INDEX ix_extra ON doc_events (document_id) INCLUDE (status)",
            "nulls": "CREATE INDEX ix_extra ON doc_events (event_timestamp NULLS FIRST)",
            "opclass": "CREATE INDEX ix_extra ON document (name text_pattern_ops)",
            "method": "CREATE INDEX ix_extra ON document USING hash (name)",
            "storage": "CREATE INDEX ix_extra ON document (name) WITH (fillfactor = 70)",
            "nulls-not-distinct": "CREATE UNIQUE INDEX ix_extra ON document (path) NULLS NOT DISTINCT",
        }
    return extras


def test_an_extra_index_of_any_shape_is_reported_and_repaired_never_a_crash(env):
    """verify, verify --repair, the fleet-drift check, status and adopt on tenants holding an
    index of any shape (an expression index made them crash with a TypeError on PostgreSQL and
    was not seen at all on SQLite)."""
    extras = extra_indexes(env.kind)
    assert cli("provision", "plain", *extras).exit_code == 0
    for tenant_id, statement in extras.items():
        by_hand(env, tenant_id, statement)

    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert rows.pop("plain")["state"] == "ok"
    assert {t: r["state"] for t, r in rows.items()} == dict.fromkeys(extras, "drifted")
    for tenant_id, row in rows.items():
        (line,) = row["diff"]
        assert line.startswith(("extra tables.", "tables.")) and ".indexes.ix_extra" in line, (tenant_id, line)
        assert row["repairs"][0].startswith("drop index ix_extra on "), row["repairs"]
    human = cli("verify", "--all-tenants")
    assert human.exit_code == 1 and f"{len(extras)} drifted, 1 ok" in human.stdout, human.output

    check = cli("check", "--only", "fleet-drift", "--json")
    assert check.exit_code == 1, check.output
    (found,) = json.loads(check.stdout)["checks"]
    assert found["status"] == "failed" and f"{len(extras)} of {len(extras) + 1} tenants" in found["message"]

    # Unversioned, with such an index: recognised as matching nothing, refused, untouched.
    by_hand(env, "expression", "DROP TABLE alembic_version")
    status = cli("status", "--tenant", "expression", "--json")
    assert status.exit_code == 0, status.output
    (row,) = json.loads(status.stdout)
    # It matches nothing: `matches` is no revision (it said the nearest one, as if it matched).
    assert (row["adopt"], row["matches"], row["nearest"]) == ("refuse", None, head()), row
    assert "unversioned (matches no revision, nearest " in cli("status", "--tenant", "expression").stdout
    adopted = cli("adopt", "expression", "--json")
    assert adopted.exit_code == 1, adopted.output
    assert any("ix_extra" in line for line in reported(adopted.stdout)[0]["details"])
    del extras["expression"]

    result = cli("verify", "--all-tenants", "--repair", "--yes", "--json")
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert {t: rows[t]["state"] for t in extras} == dict.fromkeys(extras, "repaired")
    assert {tenant_snapshot(env, t) == tenant_snapshot(env, "plain") for t in extras} == {True}


def test_repair_recreates_an_index_whatever_its_names_and_predicate_hold(env):
    """Quoted names holding '(' and ',', an expression, DESC, and a predicate holding '%', '?'
    and ':': dropped and recreated from the snapshot's definition, the index is the same."""
    assert cli("provision", "odd").exit_code == 0
    engine = tenant_engine(env, "odd")
    schema = None if env.kind == "sqlite" else env.namespace("odd")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql('CREATE TABLE "Odd(t" ("we,ird" TEXT, "key" TEXT, b TEXT)')
            conn.execute(
                sa.DDL(
                    'CREATE INDEX "ix(1" ON "Odd(t" ("we,ird", lower("key") DESC)'
                    " WHERE b LIKE 'a%%' AND b <> '?' AND b <> ':x'"
                )
            )
            before = snapshot(conn, schema)
            index = {"name": "ix(1", **before["tables"]["Odd(t"]["indexes"]["ix(1"]}
            assert "'a%'" in index["definition"] and "':x'" in index["definition"]
            adoption.apply_repairs(
                conn,
                adoption.Recognition(adoption.Decision.REPAIR, repairs=[("drop", "Odd(t", index), ("create", "Odd(t", index)]),
            )
            assert snapshot(conn, schema) == before
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_unique_constraint_redefined_under_its_name_is_drift(pg_env):
    """The revision's unique constraint (uq_docbasket_name) redefined with INCLUDE, NULLS NOT
    DISTINCT or DEFERRABLE: the same name and columns, another constraint; reported (not
    repairable: only indexes are), never grouped with the revision's own."""
    redefine = "ALTER TABLE docbasket DROP CONSTRAINT uq_docbasket_name, ADD CONSTRAINT uq_docbasket_name UNIQUE {}"
    alikes = {
        "include": redefine.format("(name) INCLUDE (id)"),
        "nulls-not-distinct": redefine.format("NULLS NOT DISTINCT (name)"),
        "deferrable": redefine.format("(name) DEFERRABLE INITIALLY DEFERRED"),
        "same": redefine.format("(name)"),  # dropped and added back as it was: not drift
    }
    assert cli("provision", *alikes).exit_code == 0
    for tenant_id, statement in alikes.items():
        by_hand(pg_env, tenant_id, statement)
    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert {t: (r["state"], r.get("repairable")) for t, r in rows.items()} == {
        "include": ("drifted", False),
        "nulls-not-distinct": ("drifted", False),
        "deferrable": ("drifted", False),
        "same": ("ok", None),
    }
    assert rows["include"]["diff"] == [
        "tables.docbasket.unique_constraints: expected [['uq_docbasket_name', ['name']]], "
        "found [['uq_docbasket_name', ['name'], 'UNIQUE (name) INCLUDE (id)']]"
    ]


def test_a_sqlite_column_given_a_collation_is_drift(sqlite_env):
    """SQLite states a column's collation only in its CREATE TABLE (SQLAlchemy's reflection
    drops it): a table rebuilt with `name VARCHAR(255) COLLATE NOCASE` is drift, not ok."""
    assert cli("provision", "plain", "nocase", "binary").exit_code == 0
    for tenant_id, collation in (("nocase", "COLLATE NOCASE"), ("binary", "COLLATE BINARY")):
        path = sqlite_env.workdir / sqlite_env.namespace(tenant_id)
        sqlite_change_column_type(path, "processors", "name", "VARCHAR(255)", f"VARCHAR(255) {collation}")
    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 1, result.output
    rows = rows_of(result)
    assert {t: r["state"] for t, r in rows.items()} == {"plain": "ok", "nocase": "drifted", "binary": "ok"}  # BINARY: the default
    assert rows["nocase"]["diff"] == [
        "tables.processors.columns.name.type: expected 'VARCHAR(255)', found 'VARCHAR(255) COLLATE NOCASE'"
    ]
    assert rows["nocase"]["repairable"] is False

"""adopt: tenants DocEX created itself, at every schema generation and in the hybrid states
real deployments have, come under the chain with their data intact."""

from __future__ import annotations

import json
import sqlite3

import pytest
import sqlalchemy as sa
from helpers import DOCEX_2_9_10, cli, head, recognised_as, reported, tenant_engine, tenant_snapshot, version_of
from reference_schemas import (
    GENERATIONS,
    HEAD_PG,
    HEAD_SQLITE,
    index_statements,
    statements,
)

from docex_migrate import api
from docex_migrate.chain import load_chain
from docex_migrate.run_record import Run, recording
from docex_migrate.selection import hash_order
from docex_migrate.snapshot import differences

FILES = {**{rev: name for rev, name in GENERATIONS.items()}, DOCEX_2_9_10: None}


def reference_file(env, revision: str) -> str:
    if revision == DOCEX_2_9_10:
        return HEAD_SQLITE if env.kind == "sqlite" else HEAD_PG
    return f"{GENERATIONS[revision]}.{'sqlite.sql' if env.kind == 'sqlite' else 'pg-compiled.sql'}"


def build_legacy(env, tenant_id: str, ddl: list[str]) -> None:
    """A tenant as DocEX creates it: the tables and indexes, and no alembic_version."""
    if env.kind == "sqlite":
        path = env.workdir / env.namespace(tenant_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        for statement in ddl:
            db.execute(statement)
        db.commit()
        db.close()
        return
    schema = env.namespace(tenant_id)
    with env.engine().begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        for statement in ddl:
            conn.exec_driver_sql(statement)


def legacy_ddl(env, revision: str, tenant_id: str, *, indexes: bool = True) -> list[str]:
    ddl = statements(reference_file(env, revision), env.kind, env.namespace(tenant_id))
    return ddl if indexes else [s for s in ddl if not s.upper().startswith("CREATE INDEX")]


def insert_rows(env, tenant_id: str, enum_names: bool) -> None:
    """One row in every table, the way that DocEX generation stored them."""
    protocol, method = ("LOCAL", "UPLOAD") if enum_names else ("local", "upload")
    ts = "'2024-01-01 00:00:00'"
    rows = [
        f"INSERT INTO docbasket (id, name, description, storage_config, status, created_at, updated_at) VALUES ('bas_1', 'invoices', 'd', '{{\"type\": \"filesystem\"}}', 'active', {ts}, {ts})",
        f"INSERT INTO document (id, basket_id, name, source, path, content_type, document_type, checksum, status, processing_attempts, created_at, updated_at) VALUES ('doc_1', 'bas_1', 'a.pdf', '/in/a.pdf', 'bas_1/a.pdf', 'application/pdf', 'file', 'abc', 'active', 0, {ts}, {ts})",
        f"INSERT INTO document_metadata (id, document_id, key, value, metadata_type, created_at, updated_at) VALUES ('dmt_1', 'doc_1', 'vendor', 'acme', 'custom', {ts}, {ts})",
        f"INSERT INTO file_history (id, document_id, original_path, internal_path, created_at) VALUES ('fh_1', 'doc_1', '/in/a.pdf', 'bas_1/a.pdf', {ts})",
        f"INSERT INTO operations (id, document_id, operation_type, status, created_at) VALUES ('op_1', 'doc_1', 'ingest', 'done', {ts})",
        f"INSERT INTO operations (id, document_id, operation_type, status, created_at) VALUES ('op_2', 'doc_1', 'ocr', 'done', {ts})",
        f"INSERT INTO operation_dependencies (id, operation_id, depends_on, created_at) VALUES ('od_1', 'op_2', 'op_1', {ts})",
        f"INSERT INTO doc_events (id, basket_id, document_id, event_type, event_timestamp, created_at, updated_at) VALUES ('ev_1', 'bas_1', 'doc_1', 'added', {ts}, {ts}, {ts})",
        f"INSERT INTO processors (id, name, type, config, enabled, created_at, updated_at) VALUES ('prc_1', 'ocr', 'ocr', '{{}}', TRUE, {ts}, {ts})",
        f"INSERT INTO processing_operations (id, document_id, processor_id, status, created_at) VALUES ('pop_1', 'doc_1', 'prc_1', 'done', {ts})",
        f"INSERT INTO transport_routes (id, name, purpose, protocol, config, can_upload, can_download, can_list, can_delete, route_metadata, tags, priority, enabled, created_at, updated_at) VALUES ('rte_1', 'inbox', 'ingest', '{protocol}', '{{}}', TRUE, FALSE, FALSE, FALSE, '{{}}', '[]', 0, TRUE, {ts}, {ts})",
        f"INSERT INTO route_operations (id, route_id, operation_type, status, created_at) VALUES ('rop_1', 'rte_1', '{method}', 'done', {ts})",
    ]
    engine = tenant_engine(env, tenant_id)
    with engine.begin() as conn:
        for row in rows:
            conn.exec_driver_sql(row)
    engine.dispose()


TABLES = [
    "docbasket",
    "document",
    "document_metadata",
    "file_history",
    "operations",
    "operation_dependencies",
    "doc_events",
    "processors",
    "processing_operations",
    "transport_routes",
    "route_operations",
]


def row_counts_and_enums(env, tenant_id: str) -> tuple[dict[str, int], tuple[str, str], str]:
    engine = tenant_engine(env, tenant_id)
    with engine.connect() as conn:
        counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}
        protocol = conn.execute(sa.text("SELECT CAST(protocol AS VARCHAR) FROM transport_routes")).scalar()
        method = conn.execute(sa.text("SELECT CAST(operation_type AS VARCHAR) FROM route_operations")).scalar()
        source = conn.execute(sa.text("SELECT source FROM doc_events")).scalar()
    engine.dispose()
    return counts, (protocol, method), source


def head_reference(env, tmp_path) -> dict:
    build_legacy(env, "reference", legacy_ddl(env, DOCEX_2_9_10, "reference"))
    return tenant_snapshot(env, "reference")


@pytest.mark.released_head
def test_every_generation_is_adopted_and_upgraded_with_its_data(env, tmp_path):
    tenants = {f"gen{i}": revision for i, revision in enumerate(FILES, start=1)}
    stamped = {t: recognised_as(env.settings, rev) for t, rev in tenants.items()}
    for tenant_id, revision in tenants.items():
        build_legacy(env, tenant_id, legacy_ddl(env, revision, tenant_id))
        insert_rows(env, tenant_id, enum_names=revision in ("s1_docex_0_2_0", "s2_docex_2_0_3"))

    status = {r["tenant_id"]: r for r in json.loads(cli("status", "--json").stdout)}
    assert {t: (r["state"], r["matches"], r["adopt"]) for t, r in status.items()} == {
        t: ("unversioned", rev, "adopt") for t, rev in stamped.items()
    }
    result = cli("upgrade", "--all-tenants")
    assert result.exit_code == 1 and result.stdout.count("needs-adopt") == len(tenants) + 1

    result = cli("adopt", "--all-tenants", "--json")
    assert result.exit_code == 0, result.output
    adopted = {r["tenant_id"]: (r["action"], r["to_revision"]) for r in reported(result.stdout)}
    assert adopted == {t: ("adopted", rev) for t, rev in stamped.items()}
    assert {t: version_of(env, t) for t in tenants} == {t: (rev,) for t, rev in stamped.items()}

    assert cli("upgrade", "--all-tenants").exit_code == 0
    expected = head_reference(env, tmp_path)
    for tenant_id in tenants:
        assert version_of(env, tenant_id) == (head(),)
        assert differences(expected, tenant_snapshot(env, tenant_id)) == [], tenant_id
        counts, enums, _ = row_counts_and_enums(env, tenant_id)
        assert counts == {
            "docbasket": 1,
            "document": 1,
            "document_metadata": 1,
            "file_history": 1,
            "operations": 2,
            "operation_dependencies": 1,
            "doc_events": 1,
            "processors": 1,
            "processing_operations": 1,
            "transport_routes": 1,
            "route_operations": 1,
        }, tenant_id
        assert enums == ("local", "upload"), tenant_id

    # An adopted tenant goes back to its own generation exactly, enum names and all.
    assert cli("downgrade", "s2_docex_2_0_3", "--tenant", "gen2", "--yes").exit_code == 0
    build_legacy(env, "s2reference", legacy_ddl(env, "s2_docex_2_0_3", "s2reference"))
    assert differences(tenant_snapshot(env, "s2reference"), tenant_snapshot(env, "gen2")) == []
    assert row_counts_and_enums(env, "gen2")[1] == ("LOCAL", "UPLOAD")


def hybrid_ddl(env, case: str, tenant_id: str) -> list[str]:
    schema = env.namespace(tenant_id)
    suffix = "sqlite.sql" if env.kind == "sqlite" else "pg-compiled.sql"
    s6_indexes = index_statements(f"S6-docex-2.8.8.{suffix}", env.kind, schema)
    if case == "s3-tables-s6-indexes":  # a 2.2.1 tenant opened by DocEX 2.8.8+ (SQLite re-applies schema.sql)
        return legacy_ddl(env, "s3_docex_2_2_1", tenant_id) + s6_indexes
    if case == "s2-tables-s4-indexes":  # a 2.0.3 tenant opened by 2.6.1-2.8.3: enums kept, indexes added
        return legacy_ddl(env, "s2_docex_2_0_3", tenant_id) + index_statements(f"S4-docex-2.6.1.{suffix}", env.kind, schema)
    if case == "s6-without-indexes":  # DocEX 2.8.8+'s plain create_all path: no schema.sql indexes
        return legacy_ddl(env, "s6_docex_2_8_8", tenant_id, indexes=False)
    if case == "s4-with-narrowed-s5-indexes":  # an S4 tenant opened by 2.8.8+: new S5 indexes, narrowed
        s5_names = ("idx_docbasket_status ", "idx_docbasket_created_at ", "idx_document_metadata_doc_key_value ")
        return legacy_ddl(env, "s4_docex_2_6_1", tenant_id) + [s for s in s6_indexes if any(n in s for n in s5_names)]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, revision, repairs",
    [
        ("s3-tables-s6-indexes", "s5_docex_2_8_4", 4),
        ("s2-tables-s4-indexes", "s2_docex_2_0_3", 23),
        ("s6-without-indexes", "s6_docex_2_8_8", 26),
        ("s4-with-narrowed-s5-indexes", "s5_docex_2_8_4", 2),
    ],
)
@pytest.mark.released_head
def test_known_hybrids_are_repaired_then_stamped(env, tmp_path, case, revision, repairs):
    build_legacy(env, "hybrid", hybrid_ddl(env, case, "hybrid"))
    insert_rows(env, "hybrid", enum_names=case.startswith("s2"))
    before = tenant_snapshot(env, "hybrid")

    result = cli("adopt", "hybrid", "--dry-run", "--json")
    assert result.exit_code == 0
    (row,) = reported(result.stdout)
    assert (row["action"], row["to_revision"], len(row["details"])) == ("would-adopt", revision, repairs)
    assert tenant_snapshot(env, "hybrid") == before and version_of(env, "hybrid") == ()

    result = cli("adopt", "hybrid")
    assert result.exit_code == 0, result.output
    assert f"stamped at {revision} after {repairs} index repair(s)" in result.stdout
    assert version_of(env, "hybrid") == (revision,)
    assert cli("upgrade", "--tenant", "hybrid").exit_code == 0
    assert differences(head_reference(env, tmp_path), tenant_snapshot(env, "hybrid")) == []
    assert row_counts_and_enums(env, "hybrid")[1] == ("local", "upload")


@pytest.mark.parametrize(
    "change, evidence",
    [
        ("ALTER TABLE docbasket ADD COLUMN owner VARCHAR(64)", "extra tables.docbasket.columns.owner"),
        ("CREATE INDEX my_own_index ON document (name)", "extra index my_own_index on document"),
        ("DROP TABLE route_operations", "missing tables.route_operations"),
    ],
)
def test_anything_else_is_refused_with_a_diff_and_untouched(env, change, evidence):
    build_legacy(env, "odd", legacy_ddl(env, "s6_docex_2_8_8", "odd") + [change])
    before = tenant_snapshot(env, "odd")
    result = cli("adopt", "odd", "--json")
    assert result.exit_code == 1
    (row,) = reported(result.stdout)
    assert row["action"] == "failed" and "refused" in row["message"]
    assert any(line.startswith(evidence) for line in row["details"]), row["details"]
    assert tenant_snapshot(env, "odd") == before
    assert version_of(env, "odd") == ()
    human = cli("adopt", "odd")
    assert evidence in human.stdout


def test_versioned_tenants_are_left_alone(env):
    cli("provision", "fresh")
    result = cli("adopt", "--all-tenants", "--json")
    assert result.exit_code == 0
    (row,) = reported(result.stdout)
    assert row["action"] == "skipped" and "already versioned" in row["message"]


def test_upgrade_with_adopt_does_both(env):
    build_legacy(env, "old", legacy_ddl(env, "s4_docex_2_6_1", "old"))
    result = cli("upgrade", "--all-tenants", "--adopt")
    assert result.exit_code == 0, result.output
    assert version_of(env, "old") == (head(),)


def test_adopt_called_from_python_records_its_run_in_the_ledger(env):
    """api.adopt records the run it is given itself, as the CLI's adopt does: the run is in
    `runs`, finished, its tenant adopted."""
    build_legacy(env, "one", legacy_ddl(env, DOCEX_2_9_10, "one"))
    run_ = api.Run(env.settings, "adopt")
    (result,) = api.adopt(env.settings, ["one"], run=run_)
    assert result.action.value == "adopted", result.message
    (info,) = [r for r in api.runs(env.settings) if r.run_id == run_.run_id]
    assert info.command == "adopt" and info.state == "finished" and info.counts == {"adopted": 1}
    assert [(t.tenant_id, t.action) for t in api.show_run(env.settings, run_.run_id).tenants] == [("one", "adopted")]


def test_adopt_records_each_tenant_in_the_ledger_as_it_is_adopted(env):
    """Not at the end: by the time the second tenant is decided, the first one's row is in the
    ledger (a kill -9 between the two leaves the first recorded)."""
    for tenant in ("one", "two"):
        build_legacy(env, tenant, legacy_ddl(env, DOCEX_2_9_10, tenant))
    chain = load_chain()
    run_ = Run(env.settings, "adopt")
    record, seen = run_.as_it_comes(chain), []

    def on_result(result):
        record(result)
        seen.append(sorted((t.tenant_id, t.action) for t in api.show_run(env.settings, run_.run_id).tenants))

    with recording(run_, chain) as done:
        done(api.adopt(env.settings, None, chain=chain, on_result=on_result))
    assert seen == [[("one", "adopted")], [("one", "adopted"), ("two", "adopted")]]
    assert api.show_run(env.settings, run_.run_id).run.state == "finished"


def test_upgrade_with_adopt_in_waves_adopts_each_group_as_it_is_reached(env):
    """A hostile review: --adopt --canary --waves stamped every unversioned tenant of the fleet
    before the canary ran, those past the last wave too (then reported not-run at s4)."""
    tenants = ["old0", "old1", "old2", "old3"]
    for tenant in tenants:
        build_legacy(env, tenant, legacy_ddl(env, "s4_docex_2_6_1", tenant))
    result = cli("upgrade", "--all-tenants", "--adopt", "--canary", "old0", "--waves", "1", "--json")
    assert result.exit_code == 1, result.output  # tenants past the last wave are not run
    done = {r["tenant_id"]: r for r in reported(result.stdout)}
    wave = [t for t in hash_order(tenants) if t != "old0"][0]
    assert {t: done[t]["action"] for t in tenants} == {t: "upgraded" if t in ("old0", wave) else "not-run" for t in tenants}
    assert {t: version_of(env, t) for t in tenants} == {t: (head(),) if t in ("old0", wave) else () for t in tenants}
    assert {done[t]["to_revision"] for t in tenants if t not in ("old0", wave)} == {None}  # unversioned, untouched


def test_resume_of_a_staged_upgrade_with_adopt_adopts_too(env):
    """A hostile review: a staged `upgrade --adopt` stopped before its last group printed
    `upgrade --resume RUN`, which reported every unversioned tenant left needs-adopt and did
    nothing (only `--resume RUN --adopt` worked). The run records --adopt; a resume keeps it."""
    tenants = ["old0", "old1", "old2", "old3"]
    for tenant in tenants:
        build_legacy(env, tenant, legacy_ddl(env, "s4_docex_2_6_1", tenant))
    stopped = cli("upgrade", "--all-tenants", "--adopt", "--canary", "old0", "--waves", "1", "--json")
    assert stopped.exit_code == 1, stopped.output
    run_id = json.loads(stopped.stdout)["run_id"]
    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)["staging"]
    assert shown == {"canary": ["old0"], "waves": "1", "pause": 0.0, "adopt": True}
    assert "adopting each group's unversioned tenants first" in cli("runs", "show", run_id).output
    resumed = cli("upgrade", "--resume", run_id, "--json")  # the advice, verbatim
    assert resumed.exit_code == 0, resumed.output
    assert {r["action"] for r in reported(resumed.stdout)} == {"upgraded"}
    assert {version_of(env, t) for t in tenants} == {(head(),)}
    again = json.loads(resumed.stdout)["run_id"]
    assert json.loads(cli("runs", "show", again, "--json").stdout)["staging"]["adopt"] is True


def test_resume_of_an_unstaged_upgrade_with_adopt_adopts_too(env):
    """Unstaged too: the run records --adopt and `upgrade --resume RUN` adopts what is left
    (here a tenant whose adoption was refused is tried again, not reported needs-adopt);
    `--resume RUN --adopt` given explicitly does the same."""
    build_legacy(env, "good", legacy_ddl(env, "s4_docex_2_6_1", "good"))
    build_legacy(env, "odd", legacy_ddl(env, "s6_docex_2_8_8", "odd") + ["CREATE INDEX my_own_index ON document (name)"])
    first = cli("upgrade", "--all-tenants", "--adopt", "--json")
    assert first.exit_code == 1, first.output
    run_id = json.loads(first.stdout)["run_id"]
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["staging"] == {"adopt": True}
    assert "adopts unversioned tenants first (`upgrade --resume` does too)" in cli("runs", "show", run_id).output
    for extra in ([], ["--adopt"]):
        resumed = cli("upgrade", "--resume", run_id, *extra, "--json")
        assert resumed.exit_code == 1, resumed.output
        (row,) = reported(resumed.stdout)
        assert (row["tenant_id"], row["action"]) == ("odd", "failed") and "refused" in row["message"], row
    assert version_of(env, "good") == (head(),) and version_of(env, "odd") == ()

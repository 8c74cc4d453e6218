"""`docex-migrate check` keeps the README's promises (issue 23): every check runs on a clean
scratch, what a revision does outside the tenant's namespace is caught where it happens and
leaves nothing behind, a revision that ends the tenant's transaction fails, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from helpers import cli

from docex_migrate.chain import load_chain

BROKEN = Path(__file__).resolve().parent / "chains" / "broken"


def add(folder: Path, defect: str) -> None:
    """Put a broken fixture's revisions on top of the copied chain's head (HEAD_REVISION in them)."""
    head = load_chain().head
    for path in (BROKEN / defect).glob("*.py"):
        (folder / "versions" / path.name).write_text(path.read_text().replace("HEAD_REVISION", head))


def check_json(*only: str) -> tuple[int, dict[str, dict]]:
    """`check --json` (the named checks, or all): its exit code and each check's report by name.
    On PostgreSQL `check` runs the database checks on SQLite too and prefixes each evidence line
    with its backend: the configured backend's prefix is dropped here, SQLite's kept."""
    result = cli("check", "--json", *[a for name in only for a in ("--only", name)])
    assert result.stdout, result.output
    checks = json.loads(result.stdout)["checks"]
    for check in checks:
        check["evidence"] = [line.removeprefix("postgresql: ") for line in check["evidence"]]
    return result.exit_code, {c["name"]: c for c in checks}


def outside_tables(env) -> set[str]:
    with env.engine().connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT table_schema || '.' || table_name FROM information_schema.tables"
                    " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_schema NOT LIKE 't%'"
                )
            ).scalars()
        )


def test_a_write_into_public_fails_isolation_in_a_full_check_and_stays_nowhere(env, chain_copy):
    """Issue 23, 1: a full `check` passed a revision that created a table in public and wrote a
    row there (the earlier checks had committed it before isolation's "before" picture), and
    the table stayed in the database. SQLite's counterpart: a table in the temp database."""
    add(chain_copy, "writes_public")
    before = outside_tables(env) if env.kind == "postgres" else set()
    code, report = check_json()
    assert code == 1
    isolation = report["isolation"]
    assert isolation["status"] == "failed", isolation
    wanted = (
        "upgrade to b1: created table public.leak" if env.kind == "postgres" else "upgrade to b1: created temp table temp.leak"
    )
    assert wanted in isolation["evidence"], isolation["evidence"]
    if env.kind == "postgres":
        assert "upgrade to b1: wrote rows into table public.leak (1 inserted)" in isolation["evidence"]
        assert outside_tables(env) == before  # nothing left behind in the database check was pointed at


def test_writes_into_a_schema_of_another_name_fail_no_schema_names(env, chain_copy):
    """Issue 23, 2: names built from a constant, and a schema of any name, passed the source
    reading; what the revision did to the database is what counts."""
    add(chain_copy, "writes_shared_schema")
    if env.kind == "postgres":
        with env.engine().begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA docex_shared")
            conn.exec_driver_sql("CREATE TABLE docex_shared.audit (tenant text)")
    code, report = check_json()
    assert code == 1
    found = report["no-schema-names"]
    assert found["status"] == "failed", found
    if env.kind == "postgres":
        assert {
            "upgrade to b1: created schema docex_shared_new",
            "upgrade to b1: created table docex_shared_new.audit",
            "upgrade to b1: wrote rows into table docex_shared.audit (1 inserted)",
        } <= set(found["evidence"]), found["evidence"]
        with env.engine().connect() as conn:  # nothing stayed behind
            assert conn.exec_driver_sql("SELECT count(*) FROM docex_shared.audit").scalar() == 0
            assert conn.exec_driver_sql("SELECT to_regnamespace('docex_shared_new')").scalar() is None
    else:
        assert {
            "upgrade to b1: attached database file ':memory:'",
            "upgrade to b1: created table docex_shared.audit",
            "upgrade to b1: inserted rows into docex_shared.audit",
        } <= set(found["evidence"]), found["evidence"]
    # the checks that commit do not run such a chain: what it wrote outside would stay behind
    assert report["stepwise"]["status"] == "skipped" and "outside the tenant" in report["stepwise"]["message"]
    # offline-sql commits SQLite scripts on a scratch file: its ATTACH is refused there
    assert any("attaches database file ':memory:': refused" in line for line in report["offline-sql"]["evidence"])


def test_a_revision_that_ends_the_transaction_fails_a_full_check(env, chain_copy):
    """Issue 23, 3: ending the tenant's transaction is a failing revision (failed, exit 1), on
    both backends, however the revision ends it (COMMIT; END with the refusal swallowed and the
    driver's own commit)."""
    for defect in ("commits", "ends_transaction_quietly"):
        for stale in (chain_copy / "versions").glob("b1*.py"):
            stale.unlink()
        add(chain_copy, defect)
        code, report = check_json()
        assert code == 1, (defect, report)
        for name in ("upgrade-from-empty", "stepwise", "downgrade-leaves-no-trace", "mixed-fleet"):
            assert report[name]["status"] == "failed", (defect, name, report[name])
            assert any("ending the tenant's transaction is not supported" in line for line in report[name]["evidence"])
        assert not [c for c in report.values() if c["status"] == "error"]


def test_an_edited_released_revision_fails_shipped_snapshots_and_is_linted(env, chain_copy):
    """Issue 23, 5: shipped-snapshots took the edited revision's (and later ones') missing
    snapshots for "none yet", and lint looked only past the manifest's length."""
    s6 = chain_copy / "versions" / "s6_docex_2_8_8.py"
    s6.write_text(s6.read_text() + '\n\ndef _unused() -> None:\n    op.execute("CREATE INDEX edited_ix ON docbasket (name)")\n')
    code, report = check_json("shipped-snapshots", "lint")
    assert code == 1
    shipped = report["shipped-snapshots"]
    assert shipped["status"] == "failed", shipped
    assert "s6_docex_2_8_8: no shipped snapshot for its chained checksum" in shipped["evidence"]
    lint = report["lint"]  # the edited revision and the one after it (its chained checksum changed too)
    linted = lint["message"] == "2 new or edited revision(s) pass squawk"
    assert linted or any("s6" in line or "s7" in line for line in lint["evidence"]), lint


def test_adding_a_column_then_batch_altering_it_renders_offline(env, chain_copy):
    """Issue 23, 5: offline-sql on SQLite failed a legitimate revision with KeyError: the batch
    rebuild was given the table as it was before the revision's own add_column."""
    add(chain_copy, "add_then_batch_alter")
    code, report = check_json("offline-sql")
    assert report["offline-sql"]["status"] == "passed", report["offline-sql"]
    assert code == 0


def test_a_downgrade_that_leaves_a_check_a_view_and_a_trigger_fails(env, chain_copy):
    """Issue 23, 4: CHECK constraints, views (and triggers, functions) were not in the snapshot,
    so a downgrade that left them passed whenever the upgrade was written idempotently."""
    add(chain_copy, "downgrade_leaves_objects")
    code, report = check_json()
    assert code == 1
    result = report["downgrade-leaves-no-trace"]
    assert result["status"] == "failed" and "the downgrade of b2 leaves a trace" in result["message"], result
    evidence = "\n".join(result["evidence"])
    for trace in ("extra tables.labels.checks", "extra views: {'basket_names'", "extra triggers: {'labels_touch'"):
        assert trace in evidence, evidence
    if env.kind == "postgres":
        assert "extra functions: {'labels_touch()'" in evidence, evidence

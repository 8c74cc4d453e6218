"""`docex-migrate check`: every check passes on the real chain and fails on its broken fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import cli

from docex_migrate import checks
from docex_migrate.chain import load_chain
from docex_migrate.schema import metadata

ROOT = Path(__file__).resolve().parents[1]
BROKEN = Path(__file__).resolve().parent / "chains" / "broken"


def add(folder: Path, defect: str) -> None:
    """Put a broken fixture's revisions on top of the copied chain's head (HEAD_REVISION in them)."""
    head = load_chain().head
    for path in (BROKEN / defect).glob("*.py"):
        (folder / "versions" / path.name).write_text(path.read_text().replace("HEAD_REVISION", head))


def metadata_copy() -> sa.MetaData:
    copy = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(copy)
    return copy


def statuses(results) -> dict[str, str]:
    return {r.name: r.status for r in results}


def failed(results) -> list[str]:
    return [r.name for r in results if r.status == checks.FAILED]


def test_real_chain_passes_every_check(env):
    results = checks.run_checks(env.settings)
    no_tenants = {"fleet-drift": checks.SKIPPED}  # the test database holds no tenants of this test's
    assert statuses(results) == {name: no_tenants.get(name, checks.PASSED) for name in checks.NAMES}, [
        (r.name, r.message, r.evidence) for r in results if r.status != checks.PASSED
    ]


def test_two_heads(env, chain_copy):
    add(chain_copy, "two_heads")
    results = checks.run_checks(env.settings)
    assert failed(results) == ["single-head"]
    result = next(r for r in results if r.name == "single-head")
    assert "2 heads" in result.message and sorted(result.evidence) == ["b1", "b2"]
    assert statuses(results)["upgrade-from-empty"] == checks.SKIPPED


def test_schema_literal(env, chain_copy):
    add(chain_copy, "schema_literal")
    results = checks.run_checks(env.settings)
    assert failed(results) == ["no-schema-names"]
    assert next(r for r in results if r.name == "no-schema-names").evidence == ["b1.py:17: passes schema="]


def test_downgrade_that_forgets_an_index(env, chain_copy):
    add(chain_copy, "downgrade_forgets_index")
    with_index = metadata_copy()
    sa.Index("idx_docbasket_description", with_index.tables["docbasket"].c.description)
    results = checks.run_checks(env.settings, metadata=with_index)
    assert failed(results) == ["downgrade-leaves-no-trace"], [(r.name, r.evidence) for r in results if r.status != "passed"]
    result = next(r for r in results if r.name == "downgrade-leaves-no-trace")
    assert "the downgrade of b1 leaves a trace" in result.message
    assert any("extra tables.docbasket.indexes.idx_docbasket_description" in line for line in result.evidence)


def test_revision_edited_after_release(env, chain_copy):
    s4 = chain_copy / "versions" / "s4_docex_2_6_1.py"
    s4.write_text(s4.read_text() + "\n# a harmless-looking edit\n")
    results = checks.run_checks(env.settings)
    # its shipped snapshot (keyed on its checksum) is gone, and lint covers it again (issue 23)
    assert set(failed(results)) - {"lint"} == {"immutable-history", "shipped-snapshots"}
    assert next(r for r in results if r.name == "immutable-history").evidence == [
        "released revision s4_docex_2_6_1.py was edited after release (its checksum differs)"
    ]


def test_reordered_history_and_a_new_revision_on_top(chain_copy, sqlite_env):
    manifest = chain_copy / "revisions.sum"
    lines = manifest.read_text().splitlines()
    lines[-1], lines[-2] = lines[-2], lines[-1]
    manifest.write_text("\n".join(lines) + "\n")
    (result,) = checks.run_checks(sqlite_env.settings, ["immutable-history"])
    assert result.status == checks.FAILED and "reordered" in result.evidence[0]

    shutil.copy(ROOT / "alembic" / "revisions.sum", manifest)
    add(chain_copy, "sqlite_only")  # any new revision on top of the released ones
    (result,) = checks.run_checks(sqlite_env.settings, ["immutable-history"])
    assert result.status == checks.PASSED and result.message.endswith(("new since the last release: b1.py", ", b1.py"))
    checks.update_manifest(sqlite_env.settings)
    assert manifest.read_text().splitlines()[-1].startswith("b1.py h1:")
    (result,) = checks.run_checks(sqlite_env.settings, ["immutable-history"])
    assert result.status == checks.PASSED and result.message == f"{len(load_chain().order)} released revisions unchanged"


def test_model_change_without_a_revision(env):
    changed = metadata_copy()
    changed.tables["docbasket"].append_column(sa.Column("owner", sa.String(64)))
    results = checks.run_checks(env.settings, metadata=changed)
    assert failed(results) == ["metadata-matches-head"]
    result = next(r for r in results if r.name == "metadata-matches-head")
    assert any("add_column" in line and "owner" in line for line in result.evidence)


def test_revision_that_breaks_on_sqlite_only(env, chain_copy):
    add(chain_copy, "sqlite_only")
    results = checks.run_checks(env.settings)
    # offline-sql scripts SQLite as `upgrade --sql` does, by running the revision on a scratch file
    assert "pg_sleep" in next(r for r in results if r.name == "offline-sql").evidence[0]
    if env.kind == "postgres":
        assert failed(results) == ["offline-sql"]
    else:
        assert {"upgrade-from-empty", "stepwise"} <= set(failed(results))
        assert all(
            n
            in (
                "upgrade-from-empty",
                "stepwise",
                "offline-sql",
                "downgrade-leaves-no-trace",
                "metadata-matches-head",
                "mixed-fleet",
                "isolation",
                "data",
                "replayable",
                "docex-compat",
            )
            for n in failed(results)
        )
        result = next(r for r in results if r.name == "stepwise")
        assert "upgrade to b1 failed" in result.message and "pg_sleep" in result.evidence[0]


@pytest.mark.postgres
def test_lint_flags_unsafe_sql_and_opt_outs_without_reason(pg_env, chain_copy):
    add(chain_copy, "downgrade_forgets_index")
    (result,) = checks.run_checks(pg_env.settings, ["lint"])
    assert result.status == checks.PASSED  # the fixture opts out, with a reason
    b1 = chain_copy / "versions" / "b1.py"
    b1.write_text(b1.read_text().replace('"test fixture: the table is empty"', '""'))
    (result,) = checks.run_checks(pg_env.settings, ["lint"])
    assert result.status == checks.FAILED
    assert "b1: squawk_ignore['require-concurrent-index-creation'] needs a reason" in result.evidence
    b1.write_text(b1.read_text().replace("squawk_ignore = ", "ignored = "))
    (result,) = checks.run_checks(pg_env.settings, ["lint"])
    assert result.status == checks.PASSED  # CONCURRENTLY cannot apply to the tool: off for every revision
    b1.write_text(b1.read_text().replace('["description"])', '["description"])\n    op.drop_table("doc_events")'))
    (result,) = checks.run_checks(pg_env.settings, ["lint"])
    assert result.status == checks.FAILED
    assert any("ban-drop-table" in line for line in result.evidence)


def test_fleet_at_head_is_the_deploy_gate(env):
    cli("provision", "acme_corp", "b2")
    cli("downgrade", "s6", "--tenant", "b2", "--yes")
    result = cli("check", "--only", "fleet-at-head", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["passed"] is False
    (check,) = report["checks"]
    assert check["name"] == "fleet-at-head" and check["status"] == "failed"
    assert check["evidence"] == [f"b2 ({env.namespace('b2')}): behind at s6_docex_2_8_8"]
    assert cli("upgrade", "--all-tenants").exit_code == 0
    assert cli("check", "--only", "fleet-at-head").exit_code == 0


def test_check_exit_codes(sqlite_env, monkeypatch):
    result = cli("check", "--only", "single-head", "--only", "no-schema-names")
    assert result.exit_code == 0 and "2 passed" in result.stdout
    result = cli("check", "--only", "nonsense")
    assert result.exit_code == 2 and "unknown check nonsense" in result.stderr
    monkeypatch.setenv("DOCEX_DATABASE_URL", "postgresql://u:pw@127.0.0.1:1/x")
    result = cli("check", "--only", "fleet-at-head")
    assert result.exit_code == 2 and "ERROR" in result.stdout and "pw" not in result.output


def test_a_revision_that_ends_the_transaction_fails_the_check(env, chain_copy):
    """Found in review: the guard's refusal was taken for 'could not run' (error, exit 2); the
    chain is what is wrong, so the checks that run it fail (exit 1)."""
    add(chain_copy, "commits")
    results = checks.run_checks(env.settings, ["upgrade-from-empty", "stepwise"])
    assert [r.status for r in results] == [checks.FAILED] * 2, [(r.name, r.status, r.message) for r in results]
    assert all("ending the tenant's transaction is not supported" in r.evidence[0] for r in results)
    result = cli("check", "--only", "upgrade-from-empty")
    assert result.exit_code == 1, result.output

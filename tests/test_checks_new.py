"""The checks issue 23 added: data (revisions over rows), docex-compat (head is DocEX's schema),
and `check` on both backends. Each runs a real bad revision on top of a scratch copy of the
chain (tests/chains/broken) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import cli

from docex_migrate import checks
from docex_migrate.chain import load_chain
from docex_migrate.schema import metadata

BROKEN = Path(__file__).resolve().parent / "chains" / "broken"
# The database checks that migrate empty tenants: a revision that only rows break passes them.
EMPTY_TENANT_CHECKS = ["upgrade-from-empty", "stepwise", "downgrade-leaves-no-trace"]


def add(folder: Path, defect: str) -> Path:
    """Put a broken fixture's revisions on top of the copied chain's head; the path of the first."""
    head = load_chain().head
    targets = []
    for path in sorted((BROKEN / defect).glob("*.py")):
        targets.append(folder / "versions" / path.name)
        targets[-1].write_text(path.read_text().replace("HEAD_REVISION", head))
    return targets[0]


def by_name(results, name: str):
    return next(r for r in results if r.name == name)


def failed(results) -> list[str]:
    return [r.name for r in results if r.status == checks.FAILED]


@pytest.mark.parametrize(
    ("defect", "refusal"),
    [
        ("unique_over_duplicates", "unique"),
        ("not_null_without_backfill", "null"),
        ("copy_violates_pk", "unique"),  # PostgreSQL: duplicate key ... violates unique constraint; SQLite: UNIQUE
    ],
)
def test_revision_that_fails_on_a_populated_tenant(env, chain_copy, defect, refusal):
    add(chain_copy, defect)
    results = checks.run_checks(env.settings, [*EMPTY_TENANT_CHECKS, "data"])
    assert failed(results) == ["data"], [(r.name, r.message, r.evidence) for r in results]
    result = by_name(results, "data")
    assert result.message == "the upgrade to b1 fails on a tenant with rows", result.evidence
    assert refusal in result.evidence[0].lower()
    assert re.match(r"rows in the tenant: .*docbasket: \d+", result.evidence[-1]), result.evidence
    assert cli("check", "--only", "data").exit_code == 1


def test_round_trip_that_loses_rows_fails_unless_declared_destructive(env, chain_copy):
    b1 = add(chain_copy, "lossy_delete")
    results = checks.run_checks(env.settings, [*EMPTY_TENANT_CHECKS, "data"])
    assert failed(results) == ["data"]
    result = by_name(results, "data")
    assert "the round trip of b1 (upgrade, downgrade) loses rows" in result.message
    lost = re.fullmatch(r"table doc_events: (\d+) of (\d+) row\(s\) lost or changed by the round trip", result.evidence[0])
    assert lost and 3 * int(lost[1]) == int(lost[2]), result.evidence  # one row in three has no document
    assert result.evidence[1].startswith("  before: ") and "document_id=None" in result.evidence[1]
    result = cli("check", "--only", "data")
    assert result.exit_code == 1 and "destructive" in result.stdout

    b1.write_text(b1.read_text() + '\ndestructive = "events of no document are garbage"\n')
    (result,) = checks.run_checks(env.settings, ["data"])
    assert result.status == checks.PASSED and result.message.endswith("rows lost as declared (destructive) by b1")

    b1.write_text(b1.read_text().replace('"events of no document are garbage"', '""'))
    (result,) = checks.run_checks(env.settings, ["data"])
    assert result.status == checks.FAILED and 'destructive must say why the data may go: destructive = "why"' in result.message


def test_dropped_table_with_rows(env, chain_copy):
    add(chain_copy, "drops_table_with_rows")
    results = checks.run_checks(env.settings, [*EMPTY_TENANT_CHECKS, "data"])
    assert failed(results) == ["data"]
    result = by_name(results, "data")
    assert "the round trip of b2 (upgrade, downgrade) loses rows" in result.message
    assert result.evidence[0] == "table basket_note: 3 of 3 row(s) lost or changed by the round trip", result.evidence


def renamed_metadata() -> sa.MetaData:
    """The package metadata as the author of the rename fixture edits schema.py:
    docbasket.description is docbasket.summary."""
    renamed = sa.MetaData()
    for table in metadata.sorted_tables:
        if table.name != "docbasket":
            table.to_metadata(renamed)
    docbasket = metadata.tables["docbasket"]

    def name(column: str) -> str:
        return "summary" if column == "description" else column

    sa.Table(
        "docbasket",
        renamed,
        *[
            sa.Column(name(c.name), c.type, nullable=c.nullable, primary_key=c.primary_key, server_default=c.server_default)
            for c in docbasket.columns
        ],
        *[
            sa.UniqueConstraint(*[name(c.name) for c in u.columns], name=u.name)
            for u in docbasket.constraints
            if isinstance(u, sa.UniqueConstraint)
        ],
    )
    columns = renamed.tables["docbasket"].c
    for index in docbasket.indexes:  # their columns, DESC kept
        keys = [
            columns[name(e.element.name)].desc() if isinstance(e, sa.UnaryExpression) else columns[name(e.name)]
            for e in index.expressions
        ]
        sa.Index(index.name, *keys, unique=index.unique)
    return renamed


def test_a_rename_passes_every_other_check_but_not_docex_compat(env, chain_copy):
    add(chain_copy, "rename_column")
    renamed = renamed_metadata()
    results = checks.run_checks(env.settings, metadata=renamed)
    assert failed(results) == ["docex-compat"], "\n".join(
        f"{r.name} {r.message} {r.evidence}" for r in results if r.status != "passed"
    )
    result = by_name(results, "docex-compat")
    assert result.message.startswith("DocEX 2.9.10 cannot use a tenant at head (b1)")
    assert any(line.startswith("docbasket.description is missing at head") for line in result.evidence), result.evidence
    assert cli("check", "--only", "docex-compat").exit_code == 1


@pytest.mark.released_head
def test_docex_compat_passes_on_the_released_head(env):
    (result,) = checks.run_checks(env.settings, ["docex-compat"])
    assert result.status == checks.PASSED and result.message == "head is exactly DocEX 2.9.10's tenant schema"


def test_docex_compat_lets_additions_docex_cannot_notice_pass(env, chain_copy):
    """A table of the application's own on top of DocEX's: DocEX never sees it."""
    b1 = add(chain_copy, "copy_violates_pk")  # creates basket_status (its copy finds no rows on an empty tenant)
    (result,) = checks.run_checks(env.settings, ["docex-compat"])
    assert result.status == checks.PASSED and "plus what DocEX ignores: table basket_status" in result.message
    b1.unlink()
    add(chain_copy, "unique_over_duplicates")  # instead of b1: a unique index can reject DocEX's writes
    (result,) = checks.run_checks(env.settings, ["docex-compat"])
    assert result.status == checks.FAILED
    assert result.evidence == ["index docbasket.uq_docbasket_description is unique: it can reject DocEX's writes"]


@pytest.mark.postgres
def test_check_on_postgresql_covers_sqlite_too(pg_env, chain_copy):
    """A revision only SQLite rejects fails `check` on a PostgreSQL configuration."""
    add(chain_copy, "sqlite_only")
    (alone,) = checks.run_checks(pg_env.settings, ["stepwise"])
    assert alone.status == checks.PASSED  # PostgreSQL alone accepts it
    result = cli("check", "--only", "single-head", "--only", "stepwise", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["backends"] == ["postgresql", "sqlite"]
    single_head, stepwise = report["checks"]
    assert single_head["backends"] == [] and single_head["status"] == "passed"
    assert stepwise["backends"] == ["postgresql", "sqlite"] and stepwise["status"] == "failed"
    steps = len(load_chain().order)
    assert stepwise["message"].startswith(f"postgresql: {steps} steps, one at a time; sqlite: upgrade to b1 failed")
    assert any(line.startswith("sqlite: ") and "pg_sleep" in line for line in stepwise["evidence"])
    human = cli("check", "--only", "stepwise")
    assert human.exit_code == 1 and "(database checks on postgresql and sqlite)" in human.stdout


def test_check_on_sqlite_says_so(sqlite_env):
    result = cli("check", "--only", "stepwise", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["backends"] == ["sqlite"]
    assert "1 passed (database checks on sqlite)" in cli("check", "--only", "stepwise").stdout


@pytest.mark.postgres
def test_unchanged_chain_passes_every_check_on_both_backends(pg_env):
    result = cli("check", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["backends"] == ["postgresql", "sqlite"]
    database = {r["name"] for r in report["checks"] if r["backends"]}
    assert {"data", "docex-compat", "stepwise", "isolation", "shipped-snapshots"} <= database
    assert all(r["backends"] == ["postgresql", "sqlite"] for r in report["checks"] if r["backends"])


@pytest.mark.parametrize(
    ("defect", "evidence"),
    [
        ("reads_tenant_id", "b1: replay_second vs replay_first: rows.docbasket: expected"),
        ("random_name", "b1: replay_second vs replay_first: missing catalog.tables.docbasket.indexes.idx_docbasket_"),
    ],
)
def test_revision_that_differs_per_tenant_must_declare_it(env, chain_copy, defect, evidence):
    b1 = add(chain_copy, defect)
    results = checks.run_checks(env.settings, ["upgrade-from-empty", "stepwise", "replayable"])
    assert failed(results) == ["replayable"]
    result = by_name(results, "replayable")
    assert result.message.startswith("b1 give two tenants different results") and "replayable = False" in result.message
    assert any(line.startswith(evidence) for line in result.evidence), result.evidence
    if defect == "reads_tenant_id":
        assert any("replay_first_step inbox" in line and "replay_second_step inbox" in line for line in result.evidence)
    assert cli("check", "--only", "replayable").exit_code == 1

    b1.write_text(b1.read_text() + "\nreplayable = False\n")
    (result,) = checks.run_checks(env.settings, ["replayable"])
    assert result.status == checks.PASSED and result.message.endswith("differing as declared (replayable = False): b1")


def test_docex_compat_lets_a_default_be_added_but_not_changed_or_dropped():
    """A server default where DocEX has none cannot reject DocEX's writes; changing or dropping one DocEX has can."""
    from docex_migrate.check_compat import compare

    def schema(default):
        return {"tables": {"document": {"columns": {"n": {"type": "INTEGER", "nullable": False, "default": default}}}}}

    assert compare(schema(None), schema("'0'")) == ([], ["default of document.n"])
    assert compare(schema("'0'"), schema("'1'"))[0]
    assert compare(schema("'0'"), schema(None))[0]
    retyped = schema("'0'")
    retyped["tables"]["document"]["columns"]["n"]["type"] = "BIGINT"
    assert compare(schema(None), retyped)[0]  # a default comes with another change: still a problem

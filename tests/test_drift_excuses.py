"""Drift a team made on purpose (a hotfix index), declared in the config file: listed as excused,
never drift, never dropped by `verify --repair`; a bad entry refused. And `verify --repair` is a
run in the ledger like every other changing command (issue 24)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from helpers import cli, head, migrate_to, reported, tenant_snapshot, version_of
from test_drift import by_hand, rows_of

HOTFIX = "CREATE INDEX ix_hotfix_search ON document (name)"
DOCEX_DROPPED = "DROP INDEX idx_docbasket_status"


def _excuse(env, *entries: dict) -> None:
    data = yaml.safe_load(env.config_file.read_text())
    data["docex_migrate"] = {"excused_drift": list(entries)}
    env.config_file.write_text(yaml.safe_dump(data))


def _indexes(env, tenant_id: str, table: str) -> set[str]:
    return set(tenant_snapshot(env, tenant_id)["tables"][table]["indexes"])


def test_an_excused_index_is_listed_not_drift_and_repair_keeps_it(env):
    assert cli("provision", "hotfixed", "both", "clean").exit_code == 0
    by_hand(env, "hotfixed", HOTFIX)
    by_hand(env, "both", HOTFIX, DOCEX_DROPPED)
    _excuse(env, {"index": "ix_hotfix_search", "table": "document", "reason": "INC-1234: search timed out"})

    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 1, result.output  # "both" has real drift too
    rows = rows_of(result)
    assert {t: r["state"] for t, r in rows.items()} == {"hotfixed": "ok", "both": "drifted", "clean": "ok"}
    excused = "extra index ix_hotfix_search on document (excused: INC-1234: search timed out)"
    assert rows["hotfixed"]["excused"] == [excused] and rows["both"]["excused"] == [excused]
    assert rows["clean"]["excused"] == []
    assert not any("ix_hotfix_search" in line for line in rows["both"]["diff"] + rows["both"]["repairs"])

    human = cli("verify", "--tenant", "hotfixed")
    assert human.exit_code == 0, human.output
    assert f"hotfixed: {excused}" in human.output and "1 with excused differences" in human.output

    repaired = cli("verify", "--all-tenants", "--repair", "--yes", "--json")
    assert repaired.exit_code == 0, repaired.output
    assert rows_of(repaired)["both"]["state"] == "repaired"
    for tenant_id in ("hotfixed", "both"):
        assert "ix_hotfix_search" in _indexes(env, tenant_id, "document")
    assert "idx_docbasket_status" in _indexes(env, "both", "docbasket")

    # Without the excuse it is drift again, and repair drops it.
    _excuse(env)
    result = cli("verify", "--tenant", "hotfixed", "--json")
    assert result.exit_code == 1 and rows_of(result)["hotfixed"]["state"] == "drifted"


def test_an_excuse_covers_only_an_extra_index_on_its_table(env):
    assert cli("provision", "acme").exit_code == 0
    by_hand(env, "acme", HOTFIX, DOCEX_DROPPED)
    # (An excuse naming a revision's own index is refused: see the test below.)
    _excuse(env, {"index": "ix_hotfix_search", "table": "docbasket", "reason": "on another table"})
    row = rows_of(cli("verify", "--tenant", "acme", "--json"))["acme"]
    assert row["state"] == "drifted" and row["excused"] == []
    assert any("ix_hotfix_search" in line for line in row["diff"])
    assert any("idx_docbasket_status" in line for line in row["diff"])


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"excused_drift": [{"index": "ix_x"}]}, "give a reason"),
        ({"excused_drift": [{"index": "ix x;drop", "reason": "r"}]}, "index must be a name"),
        ({"excused_drift": [{"index": "ix_x", "table": 3, "reason": "r"}]}, "table must be a name"),
        ({"excused_drift": [{"index": "ix_x", "reason": "r", "column": "c"}]}, "'column' is not one of"),
        ({"excused_drift": [{"index": "ix_x", "reason": "r"}, {"index": "ix_x", "reason": "again"}]}, "excused twice"),
        # Issue 24: a name YAML 1.2 reads as a number (1000.0; PyYAML keeps the string '1e3')
        ({"excused_drift": [{"index": "1e3", "reason": "r"}]}, "index 1e3 reads as a number"),
        ({"excused_drift": [{"index": "ix_x", "table": "0x1f", "reason": "r"}]}, "table 0x1f reads as a number"),
        # Issue 24: the same index with and without table: (which reason holds?)
        (
            {"excused_drift": [{"index": "ix_x", "table": "document", "reason": "r"}, {"index": "ix_x", "reason": "again"}]},
            "excused twice, on every table and on one table",
        ),
        ({"excused_drift": [{"index": "ix_x", "reason": "r"}, {"index": "ix_x", "table": "document", "reason": "a"}]}, "twice"),
        # Issue 24: a table no revision of the chain has (a typo) covered nothing, silently
        ({"excused_drift": [{"index": "ix_x", "table": "documnet", "reason": "r"}]}, "documnet is not a DocEX tenant table"),
        ({"excused_drift": {"index": "ix_x"}}, "must be a list"),
        ({"excused_drfit": []}, "excused_drfit"),
        ("yes", "must be a mapping"),
    ],
)
def test_a_bad_excuse_is_refused_before_anything(sqlite_env, section, says):
    config = sqlite_env.workdir / "docex.yaml"
    config.write_text(yaml.safe_dump({"docex_migrate": section}))
    before = sqlite_env.everything()
    result = cli("--config", str(config), "verify", "--all-tenants")
    assert result.exit_code == 2, result.output
    assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert sqlite_env.everything() == before


def test_a_misspelt_section_is_refused(sqlite_env):
    config = sqlite_env.workdir / "docex.yaml"
    config.write_text(yaml.safe_dump({"docex_migrat": {"excused_drift": []}}))
    result = cli("--config", str(config), "status")
    assert result.exit_code == 2 and "docex_migrat" in result.stderr, result.output


def test_verify_repair_is_a_run_in_the_ledger(env):
    assert cli("provision", "drifted", "fine").exit_code == 0
    by_hand(env, "drifted", DOCEX_DROPPED)
    assert cli("verify", "--all-tenants").exit_code == 1
    assert json.loads(cli("runs", "--json").stdout)[0]["command"] == "provision"  # verify alone records nothing

    result = cli("verify", "--all-tenants", "--repair", "--yes")
    assert result.exit_code == 0, result.output
    (run,) = [r for r in json.loads(cli("runs", "--json").stdout) if r["command"] == "repair"]
    assert run["counts"] == {"repaired": 1} and run["state"] == "finished" and run["selection"] == "--all-tenants"
    assert f"run {run['run_id']} recorded" in result.stderr
    detail = json.loads(cli("runs", "show", run["run_id"], "--json").stdout)
    (tenant,) = detail["tenants"]
    assert (tenant["tenant_id"], tenant["action"]) == ("drifted", "repaired")
    assert tenant["message"] == "create index idx_docbasket_status on docbasket(status)"

    undo = cli("undo", run["run_id"], "--yes")  # the indexes it removed were not the revision's
    assert undo.exit_code == 2 and "(repair) cannot be undone" in undo.stderr, undo.output

    # A repair with nothing to repair records nothing.
    assert cli("verify", "--all-tenants", "--repair", "--yes").exit_code == 0
    assert len([r for r in json.loads(cli("runs", "--json").stdout) if r["command"] == "repair"]) == 1


LATER = '''"""a revision above the tenants' (issue 24's excuse tests)

Revision ID: {revision}
Revises: {head}
"""
from alembic import op

revision = "{revision}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_later_search ON document (name)")
    op.execute("CREATE UNIQUE INDEX uq_basket_status ON docbasket (status)")


def downgrade() -> None:
    op.execute("DROP INDEX uq_basket_status")
    op.execute("DROP INDEX ix_later_search")
'''


def _later(chain_copy) -> tuple[str, str]:
    """The chain with a revision on top defining ix_later_search and uq_basket_status: (the head
    below it, the new head)."""
    below = head()
    (chain_copy / "versions" / "s99_later.py").write_text(LATER.format(revision="s99_later", head=below))
    return below, "s99_later"


def _repair_runs() -> list[dict]:
    return [r for r in json.loads(cli("runs", "--json").stdout) if r["command"] == "repair"]


@pytest.mark.parametrize(
    "entry",
    [
        {"index": "idx_docbasket_status"},  # the head's index, on every table
        {"index": "idx_docbasket_status", "table": "document"},  # the head's index's name, on another table
        {"index": "ix_later_search", "table": "document"},  # defined by a revision above the tenant
        {"index": "uq_docbasket_name", "table": "docbasket"},  # the name of a unique constraint's index
        {"index": "IDX_DOCBASKET_STATUS", "table": "document"},  # one name to SQLite, whatever its case
    ],
)
def test_an_excuse_naming_what_a_revision_defines_is_refused_before_anything(env, chain_copy, entry):
    """Issue 24: an excuse naming an index the chain itself defines was accepted. An excused index
    holding the name of a revision's index (moved to another table; or, on a tenant below the
    revision that defines it, an index of that name) then made `verify --repair` fail every time
    while verify called it repairable: the name is one namespace per tenant, and repair never
    drops an excused index. Refused now, at any revision (tenants sit at different revisions)."""
    below, later = _later(chain_copy)
    assert cli("provision", "moved", "early").exit_code == 0
    by_hand(env, "moved", "DROP INDEX idx_docbasket_status", "CREATE INDEX idx_docbasket_status ON document (status)")
    migrate_to(env, "early", below, downgrade=True)
    by_hand(env, "early", "CREATE INDEX ix_later_search ON document (name)")
    _excuse(env, {**entry, "reason": "INC-1: hotfix"})
    before = {t: tenant_snapshot(env, t) for t in ("moved", "early")}

    for command in (["verify"], ["verify", "--repair", "--yes"], ["upgrade", "--verify-first"]):
        result = cli(*command, "--all-tenants")
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.count("\n") == 1, result.stderr
        assert f"{entry['index']} is not an extra index: revision " in result.stderr, result.stderr
        assert "remove the entry" in result.stderr
    assert {t: tenant_snapshot(env, t) for t in ("moved", "early")} == before
    assert (version_of(env, "moved"), version_of(env, "early")) == ((later,), (below,))
    assert not _repair_runs()

    # Without the excuse verify's verdict and repair agree: "moved" is repairable, and repaired.
    _excuse(env)
    rows = rows_of(cli("verify", "--all-tenants", "--json"))
    assert (rows["moved"]["state"], rows["moved"]["repairable"]) == ("drifted", True)
    repaired = cli("verify", "--tenant", "moved", "--repair", "--yes", "--json")
    assert repaired.exit_code == 0, repaired.output
    assert rows_of(repaired)["moved"]["state"] == "repaired"
    assert "idx_docbasket_status" in _indexes(env, "moved", "docbasket")


def test_a_failed_repair_counts_as_failed_in_the_report_as_in_the_ledger(env, chain_copy):
    """Issue 24: `verify --repair --yes --json` counted {drifted: 2, repaired: 1} where the ledger
    had 1 failed, 1 repaired: a tenant whose repair failed stayed "drifted" in the report."""
    _, later = _later(chain_copy)
    assert cli("provision", "fixable", "duplicates", "unrepairable").exit_code == 0
    by_hand(env, "fixable", DOCEX_DROPPED)
    # Its unique index dropped and rows added that it forbids: repair's CREATE UNIQUE INDEX fails.
    rows = ", ".join(f"('b{n}', 'basket {n}', '{{}}', 'ACTIVE', '2026-01-01', '2026-01-01')" for n in (1, 2))
    by_hand(
        env,
        "duplicates",
        "DROP INDEX uq_basket_status",
        f"INSERT INTO docbasket (id, name, storage_config, status, created_at, updated_at) VALUES {rows}",
    )
    by_hand(env, "unrepairable", "ALTER TABLE docbasket ADD COLUMN extra INTEGER")  # not indexes: never attempted

    result = cli("verify", "--all-tenants", "--repair", "--yes", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    states = {r["tenant_id"]: r["state"] for r in reported(result.stdout)}
    assert states == {"fixable": "repaired", "duplicates": "failed", "unrepairable": "drifted"}
    assert report["counts"] == {"drifted": 1, "failed": 1, "repaired": 1} and report["ok"] is False
    failed = next(r for r in reported(result.stdout) if r["tenant_id"] == "duplicates")
    assert failed["error"].startswith("repair failed") and failed["diff"] and failed["repairs"]

    (run,) = _repair_runs()
    detail = json.loads(cli("runs", "show", run["run_id"], "--json").stdout)
    recorded = Counter(t["action"] for t in detail["tenants"])
    assert recorded == {"failed": 1, "repaired": 1} == run["counts"]
    assert {k: report["counts"][k] for k in recorded} == recorded  # the report counts what the ledger records
    assert "uq_basket_status" not in _indexes(env, "duplicates", "docbasket")  # rolled back
    assert version_of(env, "duplicates") == (later,)

    human = cli("verify", "--all-tenants", "--repair", "--yes")
    assert human.exit_code == 1, human.output
    assert "1 drifted, 1 failed, 1 ok" in human.stdout, human.output
    assert "duplicates: repair tried, rolled back: create index uq_basket_status" in human.stdout, human.output
    assert len(_repair_runs()) == 1  # a repair that changed nothing (its one attempt rolled back) records nothing

"""Drift a team made on purpose (a hotfix index), declared in the config file: listed as excused,
never drift, never dropped by `verify --repair`; a bad entry refused. And `verify --repair` is a
run in the ledger like every other changing command (issue 24)."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import cli, tenant_snapshot
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
    _excuse(
        env,
        {"index": "ix_hotfix_search", "table": "docbasket", "reason": "on another table"},
        {"index": "idx_docbasket_status", "reason": "a revision's own index is never excused"},
    )
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

"""--plan: what upgrade, downgrade, undo, --resume and provision would do, tenant by tenant,
computed by the command's own planning; nothing changes (the tenants, the ledger, the schemas and
files, the locks are as before), and the real command then does exactly what the plan listed.
And the one JSON object every changing command prints (docs/schemas/command-report.schema.json).
Both backends: the small chain tests/chains/steps, and the real chain for the JSON of every command."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import jsonschema
import pytest
import sqlalchemy as sa
from helpers import REPORT_SCHEMA, cli, head, report_of, start, version_of
from test_runs import at, latest_run, wait_for_marker

from docex_migrate.advice import command
from docex_migrate.chain import load_chain
from docex_migrate.config import load_settings
from docex_migrate.results import Action, CommandReport, TenantResult
from docex_migrate.selection import hash_order
from docex_migrate.snapshot import snapshot


def fleet_state(env) -> dict:
    """Everything a command could leave changed: SQLite, every file's bytes (tenants and the run
    ledger); PostgreSQL, every schema, each tenant's catalog and version rows, the ledger's rows,
    and the advisory locks held."""
    if env.kind == "sqlite":
        files = sorted(p for p in env.workdir.rglob("*") if p.is_file() and p != env.config_file)
        return {str(p.relative_to(env.workdir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    prefix = env.settings.postgres.schema_template.split("{")[0]
    engine = env.engine()
    try:
        with engine.connect() as conn:
            schemas = {s for s in conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars() if "_temp_" not in s}
            tenants = sorted(s for s in schemas if s.startswith(prefix))
            state: dict = {"schemas": schemas, "catalogs": {s: snapshot(conn, s) for s in tenants}}
            state["versions"] = {
                s: sorted(conn.execute(sa.text(f'SELECT version_num FROM "{s}".alembic_version')).scalars())
                for s in tenants
                if "alembic_version" in sa.inspect(conn).get_table_names(schema=s)
            }
            if "docex_migrate" in schemas:
                state["ledger"] = {
                    t: sorted(map(repr, conn.execute(sa.text(f"SELECT * FROM docex_migrate.{t}"))))
                    for t in sa.inspect(conn).get_table_names(schema="docex_migrate")
                }
            state["advisory_locks"] = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid() "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            ).scalar()
            return state
    finally:
        engine.dispose()


def planned(env, *args: str, exit_code: int = 0) -> dict:
    """``args`` with --plan --json: the exit code the run would have (1: a tenant would be
    refused), one report that is a plan, and nothing changed."""
    before = fleet_state(env)
    result = cli(*args, "--plan", "--json")
    assert result.exit_code == exit_code, result.output
    report = report_of(result.stdout)
    assert report["plan"] is True and report["run_id"] is None
    assert fleet_state(env) == before
    return report


def done(result) -> dict:
    assert result.exit_code == 0, result.output
    report = report_of(result.stdout)
    assert report["plan"] is False
    return report


def moves(report: dict) -> set[tuple]:
    """(tenant, what it does, from, to, wave), a plan's would-X read as the X its run reports."""
    actions = {"would-upgrade": "upgraded", "would-downgrade": "downgraded", "would-provision": "provisioned"}
    return {
        (t["tenant_id"], actions.get(t["action"], t["action"]), t["from_revision"], t["to_revision"], t["wave"])
        for t in report["tenants"]
    }


def test_upgrade_plan_changes_nothing_and_lists_what_the_upgrade_then_does(steps):
    env = steps
    at(env, ["a", "b"], "r1")
    at(env, ["c"], "r2")
    at(env, ["d"], "r3")
    plan = planned(env, "upgrade", "--all-tenants")
    assert plan["command"] == "upgrade" and plan["target"] == "r3"
    assert moves(plan) == {
        ("a", "upgraded", "r1", "r3", None),
        ("b", "upgraded", "r1", "r3", None),
        ("c", "upgraded", "r2", "r3", None),
        ("d", "skipped", "r3", "r3", None),  # and why: already at the target
    }
    assert {t["tenant_id"]: t["message"] for t in plan["tenants"]}["d"] == "already at the target"
    assert plan["counts"] == {"skipped": 1, "would-upgrade": 3}

    human = cli("upgrade", "--all-tenants", "--plan")
    assert human.exit_code == 0, human.output
    assert "nothing has been changed" in human.stdout
    assert any(line.split()[:3] == ["c", env.namespace("c"), "would-upgrade"] for line in human.stdout.splitlines())

    run = done(cli("upgrade", "--all-tenants", "--json"))
    assert moves(run) == moves(plan)
    assert run["run_id"] == latest_run()["run_id"]
    assert {version_of(env, t) for t in "abcd"} == {("r3",)}


def test_a_plan_names_the_refusals_the_run_then_meets(steps):
    """A tenant that does not exist is refused in the plan as in the run (exit 1 for both)."""
    env = steps
    at(env, ["a"], "r1")
    before = fleet_state(env)
    result = cli("upgrade", "--tenant", "a", "--tenant", "ghost", "--plan", "--json")
    assert result.exit_code == 1, result.output
    plan = report_of(result.stdout)
    assert plan["ok"] is False and {t["tenant_id"]: t["action"] for t in plan["tenants"]} == {
        "a": "would-upgrade",
        "ghost": "failed",
    }
    assert fleet_state(env) == before
    result = cli("upgrade", "--tenant", "a", "--tenant", "ghost", "--json")
    assert result.exit_code == 1
    assert moves(report_of(result.stdout)) == moves(plan)


def test_plan_with_waves_shows_each_tenant_s_wave_and_the_run_takes_them(steps):
    env = steps
    tenants = [f"w{i}" for i in range(8)]
    at(env, tenants, "r1")
    at(env, ["w9"], "r3")  # at the target: skipped, whatever wave it falls in
    spec = ["--canary", "w3", "--waves", "2,100%"]
    plan = planned(env, "upgrade", "--all-tenants", *spec)
    waves = {t["tenant_id"]: t["wave"] for t in plan["tenants"]}
    rest = [t for t in hash_order([*tenants, "w9"]) if t != "w3"]
    assert waves == {"w3": 1, **dict.fromkeys(rest[:2], 2), **dict.fromkeys(rest[2:], 3)}

    human = cli("upgrade", "--all-tenants", *spec, "--plan")
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    assert lines[1].split() == ["TENANT", "NAMESPACE", "ACTION", "WAVE", "DETAIL"]
    assert next(line for line in lines if line.startswith("w3 ")).split()[2:4] == ["would-upgrade", "1"]

    run = done(cli("upgrade", "--all-tenants", *spec, "--json"))
    assert moves(run) == moves(plan)


def test_resume_plan_lists_the_tenants_the_resume_then_finishes(steps, monkeypatch):
    env = steps
    at(env, ["a", "b", "c"], "r1")
    monkeypatch.setenv("STEPS_FAIL_TENANT", "b")
    assert cli("upgrade", "--all-tenants").exit_code == 1
    first = latest_run()["run_id"]
    monkeypatch.delenv("STEPS_FAIL_TENANT")

    plan = planned(env, "upgrade", "--resume", first)
    assert plan["resumes"] == first and plan["target"] == "r3"
    assert moves(plan) == {("b", "upgraded", "r1", "r3", None)}
    assert latest_run()["run_id"] == first  # no run recorded by the plan

    run = done(cli("upgrade", "--resume", first, "--json"))
    assert moves(run) == moves(plan) and run["resumes"] == first


def test_downgrade_and_its_resume_plan_without_a_prompt_or_yes(steps, monkeypatch):
    env = steps
    at(env, ["a", "b"], "r3")
    monkeypatch.setattr("docex_migrate.cli_running.on_a_terminal", lambda: True)  # a prompt would read stdin: none given
    plan = planned(env, "downgrade", "r1", "--tenant", "a", "--tenant", "x", exit_code=1)
    assert moves(plan) == {("a", "downgraded", "r3", "r1", None), ("x", "failed", None, None, None)}
    result = cli("downgrade", "r1", "--tenant", "a", "--tenant", "x", "--yes", "--json")
    assert result.exit_code == 1
    assert moves(report_of(result.stdout)) == moves(plan)
    first = latest_run()["run_id"]

    at(env, ["x"], "r3")  # created since: the resume takes it to the run's target
    plan = planned(env, "downgrade", "--resume", first)
    assert plan["resumes"] == first and plan["target"] == "r1"
    assert moves(plan) == {("x", "downgraded", "r3", "r1", None)}
    run = done(cli("downgrade", "--resume", first, "--yes", "--json"))
    assert moves(run) == moves(plan)
    assert version_of(env, "x") == ("r1",)


def test_undo_plan_without_a_prompt_lists_what_undo_then_does(steps, monkeypatch):
    env = steps
    at(env, ["a", "b", "c"], "r1")
    assert cli("upgrade", "--all-tenants").exit_code == 0
    first = latest_run()["run_id"]
    assert cli("downgrade", "r2", "--tenant", "b", "--yes").exit_code == 0  # b moved since: left alone
    monkeypatch.setattr("docex_migrate.cli_running.on_a_terminal", lambda: True)

    plan = planned(env, "undo", first)
    assert plan["undoes"] == first and plan["target"] is None
    assert moves(plan) == {
        ("a", "downgraded", "r3", "r1", None),
        ("b", "skipped", "r2", "r2", None),
        ("c", "downgraded", "r3", "r1", None),
    }
    assert "moved since" in {t["tenant_id"]: t["message"] for t in plan["tenants"]}["b"]

    run = done(cli("undo", first, "--yes", "--json"))
    assert moves(run) == moves(plan) and run["undoes"] == first


def test_provision_plan_creates_nothing(env):
    assert cli("provision", "acme_corp").exit_code == 0
    before = env.everything()
    result = cli("provision", "acme_corp", "globex_corp", "--plan", "--json")
    assert result.exit_code == 1, result.output  # acme_corp exists: the provision would fail it
    plan = report_of(result.stdout)
    assert {t["tenant_id"]: t["action"] for t in plan["tenants"]} == {"acme_corp": "failed", "globex_corp": "would-provision"}
    assert env.everything() == before and not env.exists("globex_corp")
    plan = planned(env, "provision", "acme_corp", "globex_corp", "--exist-ok")
    assert moves(plan) == {
        ("acme_corp", "skipped", head(), head(), None),
        ("globex_corp", "provisioned", None, head(), None),
    }
    run = done(cli("provision", "acme_corp", "globex_corp", "--exist-ok", "--json"))
    assert moves(run) == moves(plan)


def test_plan_refuses_what_it_cannot_foresee(steps):
    env = steps
    at(env, ["a"], "r1")
    for args, expected in (
        (["upgrade", "--all-tenants", "--adopt"], "--plan cannot foresee what --adopt finds"),
        (["upgrade", "--all-tenants", "--sql"], "--plan"),
        (["provision", "b", "--enable-multi-tenancy"], "drop --enable-multi-tenancy"),
    ):
        before = fleet_state(env)
        result = cli(*args, "--plan")
        assert result.exit_code == 2, result.output
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert fleet_state(env) == before


def test_every_changing_command_prints_one_report_object(env):
    """provision, downgrade, upgrade, undo, adopt, verify --repair, deprovision: --json is one
    object valid against docs/schemas/command-report.schema.json, naming its recorded run."""
    head = load_chain().head
    provisioned = done(cli("provision", "a", "b", "c", "--json"))
    assert (provisioned["command"], provisioned["target"], provisioned["counts"]) == ("provision", head, {"provisioned": 3})
    assert provisioned["run_id"] == latest_run()["run_id"] and provisioned["ok"] is True

    downgraded = done(cli("downgrade", "s5", "--all-tenants", "--yes", "--json"))
    assert (downgraded["command"], downgraded["target"], downgraded["counts"]) == (
        "downgrade",
        "s5_docex_2_8_4",
        {"downgraded": 3},
    )
    assert downgraded["run_id"] == latest_run()["run_id"] != provisioned["run_id"]

    upgraded = done(cli("upgrade", "--all-tenants", "--json"))
    assert (upgraded["command"], upgraded["target"], upgraded["counts"]) == ("upgrade", head, {"upgraded": 3})
    assert [t["tenant_id"] for t in upgraded["tenants"]] == ["a", "b", "c"]

    nothing = done(cli("upgrade", "--all-tenants", "--json"))  # nothing to do: nothing recorded
    assert nothing["run_id"] is None and nothing["counts"] == {"skipped": 3}

    undone = done(cli("undo", upgraded["run_id"], "--yes", "--json"))
    assert (undone["command"], undone["undoes"], undone["counts"]) == ("undo", upgraded["run_id"], {"downgraded": 3})
    assert undone["run_id"] == latest_run()["run_id"]

    adopted = done(cli("adopt", "a", "--json"))
    assert adopted["command"] == "adopt" and adopted["counts"] == {"skipped": 1}

    repaired = done(cli("verify", "--all-tenants", "--repair", "--yes", "--json"))
    assert repaired["command"] == "verify" and repaired["counts"] == {"ok": 3}
    assert [t["state"] for t in repaired["tenants"]] == ["ok", "ok", "ok"]
    assert isinstance(json.loads(cli("verify", "--all-tenants", "--json").stdout), list)  # read-only: as before

    gone = done(cli("deprovision", "c", "--yes", "--json"))
    assert gone["command"] == "deprovision" and gone["run_id"] == latest_run()["run_id"]
    (row,) = gone["tenants"]
    assert (row["tenant_id"], row["action"], row["from_revision"]) == ("c", "deprovisioned", "s5_docex_2_8_4")
    assert row["backup"].startswith("/") and row["backup"] in row["message"]


def test_an_interrupted_run_s_report_names_the_signal_and_its_run(steps, tmp_path):
    at(steps, ["k0", "k1", "k2"], "r1")
    marker = tmp_path / "inside-step-2"
    run = start(steps, "upgrade", "--all-tenants", "--json", STEPS_SLEEP="60", STEPS_SLEEP_TENANT="k1", STEPS_MARKER=str(marker))
    try:
        wait_for_marker(run, marker, "k1")
        os.kill(run.pid, signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, err
    report = report_of(out)
    assert (report["interrupted"], report["ok"], report["run_id"]) == ("SIGINT", False, latest_run()["run_id"])
    actions = {t["tenant_id"]: t["action"] for t in report["tenants"]}
    assert actions["k0"] == "upgraded" and {actions["k1"], actions["k2"]} == {"not-run"}


@pytest.mark.parametrize("command", [["upgrade", "--all-tenants"], ["downgrade", "base", "--all-tenants"]])
def test_plan_on_an_empty_fleet_says_so(sqlite_env, command):
    result = cli(*command, "--plan", "--json")
    assert result.exit_code == 0, result.output
    assert report_of(result.stdout)["tenants"] == []


def test_the_schema_is_valid_and_in_step_with_the_code():
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
    actions = REPORT_SCHEMA["$defs"]["tenant_result"]["properties"]["action"]["enum"]
    assert {a.value for a in Action} <= set(actions)
    report = CommandReport("upgrade", [TenantResult("a", "ns", Action.UPGRADED, None, "r1")]).as_dict()
    assert set(report) == set(REPORT_SCHEMA["required"])
    assert set(report["tenants"][0]) == set(REPORT_SCHEMA["$defs"]["tenant_result"]["required"])


def past(n: int, of: int, run: str) -> str:
    """What a tenant past the last wave says: the command that reaches it, as printed (with the
    fixture's --config, as advice.command spells every printed command)."""
    resume = command(load_settings(), "upgrade", "--resume", run)
    return f"not attempted: past the last wave (the waves reach {n} of these {of} tenants): `{resume}` continues with them"


def test_plan_and_run_say_the_tenants_past_the_last_wave_are_past_it(steps):
    """Issue 24: with a wave spec that stops short of 100% (--waves 1,2 on 5 tenants) and a
    group that would fail, the plan said the tenants past the last wave were not run because
    'the rollout stopped after group 1 of 3 failed': no wave was ever to reach them. The plan
    and the run now say they are past the last wave, and what reaches them."""
    env = steps
    tenants = [f"p{i}" for i in range(5)]
    at(env, tenants, "r1")
    order = hash_order(tenants)
    selected = [a for t in tenants for a in ("--tenant", t)]

    plan = planned(env, "upgrade", *selected, "--tenant", "ghost", "--canary", "ghost", "--waves", "1,2", exit_code=1)
    said = {t["tenant_id"]: t["message"] for t in plan["tenants"]}
    assert {t: said[t] for t in order[:2]} == dict.fromkeys(
        order[:2], "not attempted: the rollout stopped after group 1 of 3 failed"
    )
    assert {t: said[t] for t in order[2:]} == dict.fromkeys(order[2:], past(3, 6, "RUN"))

    spec = [*selected, "--waves", "1,2"]  # nothing fails: the run records what the plan said
    plan = planned(env, "upgrade", *spec, exit_code=1)
    result = cli("upgrade", *spec, "--json")
    assert result.exit_code == 1, result.output
    run = report_of(result.stdout)
    assert moves(run) == moves(plan)
    messages = {t["tenant_id"]: t["message"] for t in run["tenants"]}
    assert {t: messages[t] for t in order[2:]} == dict.fromkeys(order[2:], past(2, 5, run["run_id"]))
    assert {t["tenant_id"]: t["message"].replace(run["run_id"], "RUN") for t in run["tenants"]} == {
        t["tenant_id"]: t["message"] for t in plan["tenants"]
    }
    resumed = cli("upgrade", "--resume", run["run_id"])  # the advice, run as printed
    assert resumed.exit_code == 0, resumed.output
    assert {version_of(env, t) for t in tenants} == {("r3",)}

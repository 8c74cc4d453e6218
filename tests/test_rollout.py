"""Staged rollout: canaries first, then waves in the stable hash order; the run stops after the
first group with a failure, the rest are not run, and --resume continues. Both backends, the
small chain tests/chains/steps (its step 2 fails for the tenants in $STEPS_FAIL_TENANT)."""

from __future__ import annotations

import json
import time

import pytest
from helpers import cli, migrate_to, reported, version_of
from test_runs import at, latest_run, outcomes

from docex_migrate.advice import command
from docex_migrate.config import load_settings
from docex_migrate.errors import UsageError
from docex_migrate.rollout import groups, parse_waves
from docex_migrate.selection import hash_order

TENANTS = [f"w{i:02d}" for i in range(20)]


@pytest.fixture
def steps(steps):
    """conftest's ``steps``, with every tenant at r1."""
    at(steps, TENANTS, "r1")
    return steps


def actions(result) -> dict[str, str]:
    return {r["tenant_id"]: r["action"] for r in reported(result.stdout)}


def test_waves_stop_after_the_failing_wave_and_resume_finishes(steps, monkeypatch):
    order = hash_order(TENANTS)
    first, second, rest = order[:2], order[2:5], order[5:]
    monkeypatch.setenv("STEPS_FAIL_TENANT", second[1])
    result = cli("upgrade", "--all-tenants", "--waves", "2,5,100%", "--json")
    assert result.exit_code == 1, result.output
    done = actions(result)
    assert {t: done[t] for t in first} == dict.fromkeys(first, "upgraded")
    assert {t: done[t] for t in second} == {t: "failed" if t == second[1] else "upgraded" for t in second}
    assert {t: done[t] for t in rest} == dict.fromkeys(rest, "not-run")
    assert all(
        "the rollout stopped after group 2 of 3 failed" in r["message"] for r in reported(result.stdout) if r["tenant_id"] in rest
    )
    assert {t: version_of(steps, t) for t in TENANTS} == {
        t: ("r3",) if t in first + second and t != second[1] else ("r1",) for t in TENANTS
    }

    run = latest_run("upgrade")
    assert outcomes(run["run_id"])[rest[0]] == ("not-run", "r1", "r1")
    monkeypatch.delenv("STEPS_FAIL_TENANT")
    resumed = cli("upgrade", "--resume", run["run_id"], "--json")
    assert resumed.exit_code == 0, resumed.output
    assert set(actions(resumed)) == {second[1], *rest}  # exactly the tenants the rollout did not finish
    assert {version_of(steps, t) for t in TENANTS} == {("r3",)}


def test_a_failing_canary_leaves_every_other_tenant_untouched(steps, monkeypatch):
    canary = TENANTS[7]
    monkeypatch.setenv("STEPS_FAIL_TENANT", canary)
    result = cli("upgrade", "--all-tenants", "--canary", canary, "--waves", "50%,100%", "--json")
    assert result.exit_code == 1, result.output
    done = actions(result)
    assert done == {t: "failed" if t == canary else "not-run" for t in TENANTS}
    assert {version_of(steps, t) for t in TENANTS} == {("r1",)}

    monkeypatch.delenv("STEPS_FAIL_TENANT")
    result = cli("upgrade", "--all-tenants", "--canary", canary, "--canary", TENANTS[0], "--waves", "3", "--json")
    assert result.exit_code == 1, result.output  # tenants past the last wave are not run
    done = actions(result)
    reached = [canary, TENANTS[0], *[t for t in hash_order(TENANTS) if t not in (canary, TENANTS[0])][:3]]
    assert {t for t, a in done.items() if a == "upgraded"} == set(reached)
    assert {a for t, a in done.items() if t not in reached} == {"not-run"}


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("10,5", "must grow"),
        ("10,abc", "cumulative counts or percentages"),
        ("0", "out of range"),
        ("150%", "out of range"),
        ("", "cumulative counts"),
        ("50%,3", "counts come before percentages"),  # found in review: 3 added nothing, silently
        ("\u0663", "cumulative counts or percentages"),  # Arabic-Indic 3: int() reads it
        ("10,\uff13\uff10%", "cumulative counts or percentages"),  # full-width 30%
    ],
)
def test_bad_wave_specs_are_refused_before_anything(steps, spec, why):
    result = cli("upgrade", "--all-tenants", "--waves", spec)
    assert result.exit_code == 2 and why in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert {version_of(steps, t) for t in TENANTS} == {("r1",)}
    unknown = cli("upgrade", "--all-tenants", "--canary", "nobody")
    assert unknown.exit_code == 2 and "not among the selected tenants" in unknown.stderr


def test_waves_are_cumulative_in_hash_order():
    tenants = [f"t{i}" for i in range(10)]
    planned, beyond = groups(tenants, ["t3"], parse_waves("2,50%,100%"))
    order = [t for t in hash_order(tenants) if t != "t3"]
    assert planned == [["t3"], order[:2], order[2:5], order[5:]] and beyond == []
    planned, beyond = groups(tenants, [], parse_waves("4"))
    assert planned == [hash_order(tenants)[:4]] and beyond == hash_order(tenants)[4:]
    with pytest.raises(UsageError):
        parse_waves("25%,10%")


@pytest.mark.parametrize("pause", ["inf", "1e300"])
def test_an_endless_pause_is_refused_before_anything(steps, pause):
    """Found checking every numeric option: time.sleep() overflowed on it after the first wave
    had run, so the rollout stopped half-way with 'OverflowError'."""
    result = cli("upgrade", "--all-tenants", "--waves", "1,100%", "--pause-between-waves", pause)
    assert result.exit_code == 2, result.output
    assert {version_of(steps, t) for t in TENANTS} == {("r1",)}


@pytest.mark.parametrize(("spec", "sizes"), [("15,50%", "50% of these 20 tenants is 10"), ("10,50%", "is 10, not more")])
def test_waves_that_do_not_grow_on_this_fleet_are_refused_before_anything(steps, spec, sizes):
    """Issue 24: the spec's text grew, the sizes it gives for these 20 tenants (15 then 10; 10
    then 10) do not: accepted, 15 tenants upgraded and 5 left not-run, exit 1."""
    result = cli("upgrade", "--all-tenants", "--waves", spec)
    assert result.exit_code == 2, result.output
    assert sizes in result.stderr and "must grow" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert {version_of(steps, t) for t in TENANTS} == {("r1",)}


def test_waves_after_every_tenant_is_reached_add_nothing_and_are_accepted(steps):
    """The operators' page's recipe on 20 tenants: 10, then all 20; 25% (5) and 100% have nothing left."""
    result = cli("upgrade", "--all-tenants", "--waves", "10,100,25%,100%", "--json")
    assert result.exit_code == 0, result.output
    assert set(actions(result).values()) == {"upgraded"}


def test_tenants_already_at_the_target_are_skipped_in_every_wave_and_beyond(steps):
    """Issue 24: on a fleet at head, --waves 50% listed half the tenants not-run '(--resume
    continues)', exit 1, with no run recorded to resume."""
    at(steps, TENANTS, "r3")
    result = cli("upgrade", "--all-tenants", "--waves", "50%", "--json")
    assert result.exit_code == 0, result.output
    assert actions(result) == dict.fromkeys(TENANTS, "skipped")
    assert not [r for r in json.loads(cli("runs", "--json").stdout) if r["command"] == "upgrade"]

    behind = hash_order(TENANTS)[:5]  # in the first wave; the second half is at r3 already
    for tenant in behind:
        migrate_to(steps, tenant, "r1", downgrade=True)
    result = cli("upgrade", "--all-tenants", "--waves", "50%", "--json")
    assert result.exit_code == 0, result.output
    assert actions(result) == {t: "upgraded" if t in behind else "skipped" for t in TENANTS}
    recorded = outcomes(latest_run("upgrade")["run_id"])
    assert recorded == {t: ("upgraded", "r1", "r3") if t in behind else ("skipped", "r3", "r3") for t in TENANTS}


def test_progress_off_a_terminal_names_each_wave_and_pause_and_counts_the_whole_run(steps):
    """Issue 24: the counter's denominator was the end of the current wave ([2/6], [7/11]), no
    line named the wave, and nothing was printed during a pause (it looked hung)."""
    already = [t for t in hash_order(TENANTS) if t != TENANTS[0]][-2:]  # in the last wave, at the target: not counted
    at(steps, already, "r3")
    result = cli("upgrade", "--all-tenants", "--canary", TENANTS[0], "--waves", "5,100%", "--pause-between-waves", "0.2")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith("run ")]
    assert [line for line in lines if not line.startswith("[")] == [
        "wave 1 of 3 (the canaries): 1 tenant",
        "pausing 0.2 s before wave 2 of 3",
        "wave 2 of 3: 5 tenants",
        "pausing 0.2 s before wave 3 of 3",
        "wave 3 of 3: 12 tenants",  # the 14 of the wave less the 2 at the target: what it migrates
    ]
    counters = [line.split(" ")[0] for line in lines if line.startswith("[")]
    assert counters == [f"[{n}/18]" for n in range(1, 19)]
    assert lines[lines.index("wave 3 of 3: 12 tenants") + 1].startswith("[7/18] ")  # the run's count, not the wave's


def progress_lines(result) -> list[str]:
    """The counter's lines and the wave and pause lines on stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith(("[", "wave ", "pausing "))]


def test_the_counter_counts_only_the_tenants_the_waves_reach(steps):
    """A hostile review: --waves 25% with 5 tenants behind and the rest at the target ended at
    [2/5]: the 3 behind past the last wave were counted though the run never reaches them."""
    order = hash_order(TENANTS)
    behind = order[:2] + order[10:13]  # 2 in the one wave (25% of 20: the first 5), 3 past it
    at(steps, [t for t in TENANTS if t not in behind], "r3")
    result = cli("upgrade", "--all-tenants", "--waves", "25%")
    assert result.exit_code == 1, result.output  # the 3 past the last wave are not run
    counters = [line.split(" ")[0] for line in progress_lines(result) if line.startswith("[")]
    assert counters == ["[1/2]", "[2/2]"], result.stderr
    assert [line for line in progress_lines(result) if not line.startswith("[")] == ["wave 1 of 1: 2 tenants"]


def test_no_pause_and_no_wave_line_for_waves_with_nothing_to_do(steps):
    """A hostile review: on a fleet at the target, --waves 1,2,100% --pause-between-waves 2 slept
    4 s and printed every wave's line before 'nothing to upgrade'; a wave whose tenants were all
    skipped was paused for, and the wave lines counted skipped tenants."""
    at(steps, TENANTS, "r3")
    began = time.monotonic()
    result = cli("upgrade", "--all-tenants", "--waves", "1,2,100%", "--pause-between-waves", "2")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - began < 2 and not [line for line in progress_lines(result) if line.startswith("wave")]

    order = hash_order(TENANTS)
    behind = [order[0], order[5]]  # wave 1 and wave 3 have work; wave 2 (order[1]) is at the target
    for tenant in behind:
        migrate_to(steps, tenant, "r1", downgrade=True)
    result = cli("upgrade", "--all-tenants", "--waves", "1,2,100%", "--pause-between-waves", "0.2")
    assert result.exit_code == 0, result.output
    assert [line for line in progress_lines(result) if not line.startswith("[")] == [
        "wave 1 of 3: 1 tenant",
        "pausing 0.2 s before wave 3 of 3",
        "wave 3 of 3: 1 tenant",
    ]

    migrate_to(steps, order[1], "r1", downgrade=True)  # now only wave 2 has work: no pause before it, none after it
    began = time.monotonic()
    result = cli("upgrade", "--all-tenants", "--waves", "1,2,100%", "--pause-between-waves", "2")
    assert result.exit_code == 0, result.output
    assert [line for line in progress_lines(result) if not line.startswith("[")] == ["wave 2 of 3: 1 tenant"]
    assert time.monotonic() - began < 2


def test_resume_keeps_the_run_s_waves_and_pause(steps, monkeypatch):
    """A hostile review: `upgrade --resume RUN` of a waves run (the advice a stopped rollout
    prints) migrated every tenant left in one group: no waves, no pause, no stop at the first
    failing group. It keeps the run's groups for the tenants left, with its pause."""
    order = hash_order(TENANTS)
    first, second, third = order[:1], order[1:10], order[10:]  # 1, 50% (10), 100% of 20
    monkeypatch.setenv("STEPS_FAIL_TENANT", first[0])
    stopped = cli("upgrade", "--all-tenants", "--waves", "1,50%,100%", "--pause-between-waves", "0.2", "--json")
    assert stopped.exit_code == 1 and set(actions(stopped).values()) == {"failed", "not-run"}, stopped.output
    run_id = json.loads(stopped.stdout)["run_id"]
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["staging"] == {
        "canary": [],
        "waves": "1,50%,100%",
        "pause": 0.2,
    }
    assert "staged: waves 1,50%,100%, 0.2 s between groups" in cli("runs", "show", run_id).output

    plan = cli("upgrade", "--resume", run_id, "--plan", "--json")
    assert plan.exit_code == 0, plan.output
    waves = {t["tenant_id"]: t["wave"] for t in json.loads(plan.stdout)["tenants"]}
    assert waves == {**dict.fromkeys(first, 1), **dict.fromkeys(second, 2), **dict.fromkeys(third, 3)}

    monkeypatch.setenv("STEPS_FAIL_TENANT", second[3])  # the resume stops after its second group too
    resumed = cli("upgrade", "--resume", run_id, "--json")
    assert resumed.exit_code == 1, resumed.output
    done = actions(resumed)
    assert {done[t] for t in third} == {"not-run"} and done[second[3]] == "failed"
    assert [line for line in progress_lines(resumed) if not line.startswith("[")] == [
        "wave 1 of 3: 1 tenant",
        "pausing 0.2 s before wave 2 of 3",
        "wave 2 of 3: 9 tenants",
    ]
    assert {t: version_of(steps, t) for t in third} == dict.fromkeys(third, ("r1",))

    # a resume of that resume keeps the waves still (its own), and --waves given replaces them
    again = json.loads(resumed.stdout)["run_id"]
    assert f"staged: the groups of run {run_id} left, 0.2 s between groups" in cli("runs", "show", again).output
    plan = cli("upgrade", "--resume", again, "--plan", "--json")
    assert {t["tenant_id"]: t["wave"] for t in json.loads(plan.stdout)["tenants"]} == {second[3]: 1, **dict.fromkeys(third, 2)}
    monkeypatch.delenv("STEPS_FAIL_TENANT")
    once = cli("upgrade", "--resume", again, "--waves", "100%", "--pause-between-waves", "5")
    assert once.exit_code == 0, once.output
    assert [line for line in progress_lines(once) if not line.startswith("[")] == ["wave 1 of 1: 11 tenants"]
    assert {version_of(steps, t) for t in TENANTS} == {("r3",)}


def test_resume_of_a_spec_ending_below_100_percent_takes_the_rest_as_one_last_group(steps):
    """Tenants past the last wave are not run; --resume continues with them, after the groups
    still left, as one group."""
    result = cli("upgrade", "--all-tenants", "--waves", "2,5", "--json")
    assert result.exit_code == 1, result.output
    run_id = json.loads(result.stdout)["run_id"]
    plan = cli("upgrade", "--resume", run_id, "--plan", "--json")
    assert {t["wave"] for t in json.loads(plan.stdout)["tenants"]} == {1} and len(json.loads(plan.stdout)["tenants"]) == 15


def test_a_failing_last_wave_leaves_the_tenants_past_it_past_the_last_wave(steps, monkeypatch):
    """Issue 24: with --waves 2,5 on 20 tenants and a failure in the second (last) wave, the 15
    tenants past it were 'not attempted: the rollout stopped after group 2 of 2 failed', though
    no wave was ever to reach them. They say so now, with the command that does, in the report
    and in the ledger; and that command reaches them."""
    order = hash_order(TENANTS)
    monkeypatch.setenv("STEPS_FAIL_TENANT", order[3])
    result = cli("upgrade", "--all-tenants", "--waves", "2,5", "--json")
    assert result.exit_code == 1, result.output
    run_id = json.loads(result.stdout)["run_id"]
    past = (
        "not attempted: past the last wave (the waves reach 5 of these 20 tenants): "
        f"`{command(load_settings(), 'upgrade', '--resume', run_id)}` continues with them"
    )
    said = {r["tenant_id"]: r["message"] for r in reported(result.stdout)}
    assert {t: said[t] for t in order[5:]} == dict.fromkeys(order[5:], past)
    recorded = {t["tenant_id"]: t["message"] for t in json.loads(cli("runs", "show", run_id, "--json").stdout)["tenants"]}
    assert {t: recorded[t] for t in order[5:]} == dict.fromkeys(order[5:], past)

    monkeypatch.delenv("STEPS_FAIL_TENANT")
    resumed = cli("upgrade", "--resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert set(actions(resumed)) == {order[3], *order[5:]}
    assert {version_of(steps, t) for t in TENANTS} == {("r3",)}


def test_resume_skips_a_tenant_deprovisioned_since_and_goes_on(steps, monkeypatch):
    """A hostile review: a staged resume stopped for good at the group holding a tenant
    deprovisioned since the run (`FAILED ... run 'docex-migrate provision'`, the next groups
    not run, the same on every resume). It is skipped, naming the deprovision and the restore
    that brings it back, and the rollout goes on; the plan says the same."""
    order = hash_order(TENANTS)
    first, second = order[:1], order[1:10]
    monkeypatch.setenv("STEPS_FAIL_TENANT", first[0])
    stopped = cli("upgrade", "--all-tenants", "--waves", "1,50%,100%", "--json")
    assert stopped.exit_code == 1, stopped.output
    run_id = json.loads(stopped.stdout)["run_id"]
    monkeypatch.delenv("STEPS_FAIL_TENANT")
    gone = second[2]
    dropped = cli("deprovision", gone, "--yes", "--json")
    assert dropped.exit_code == 0, dropped.output
    deprovision = latest_run("deprovision")["run_id"]
    why = f"deprovisioned since run {run_id} by deprovision run {deprovision}: `"
    again = f"then `{command(load_settings(), 'upgrade', '--resume', run_id)}`"

    plan = cli("upgrade", "--resume", run_id, "--plan", "--json")
    assert plan.exit_code == 0, plan.output
    planned = {r["tenant_id"]: r for r in reported(plan.stdout)}
    assert planned[gone]["action"] == "skipped" and planned[gone]["message"].startswith(why), planned[gone]
    assert {planned[t]["action"] for t in TENANTS if t != gone} == {"would-upgrade"}

    resumed = cli("upgrade", "--resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed.output
    done = {r["tenant_id"]: r for r in reported(resumed.stdout)}
    message = done[gone]["message"]
    assert done[gone]["action"] == "skipped" and message.startswith(why) and message.endswith(again), message
    assert "restore" in message and "provision" not in message.replace("deprovision", ""), message
    assert {done[t]["action"] for t in TENANTS if t != gone} == {"upgraded"}
    assert {version_of(steps, t) for t in TENANTS if t != gone} == {("r3",)}

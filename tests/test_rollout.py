"""Staged rollout: canaries first, then waves in the stable hash order; the run stops after the
first group with a failure, the rest are not run, and --resume continues. Both backends, the
small chain tests/chains/steps (its step 2 fails for the tenants in $STEPS_FAIL_TENANT)."""

from __future__ import annotations

import json

import pytest
from helpers import cli, version_of
from test_runs import at, latest_run, outcomes

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
    return {r["tenant_id"]: r["action"] for r in json.loads(result.stdout)}


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
        "the rollout stopped after group 2 of 3 failed" in r["message"]
        for r in json.loads(result.stdout)
        if r["tenant_id"] in rest
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

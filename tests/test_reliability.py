"""Fault tests with real processes: kill -9 mid-migration, one tenant failing among twenty,
two fleet upgrades at once, and sixteen first accesses of one new tenant. Both backends.

They use the small chain in tests/chains/steps (three steps that record themselves), selected
through $DOCEX_MIGRATE_SCRIPT_LOCATION.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import time

from helpers import (
    applied,
    cli,
    ensure_in_child,
    head,
    head_tables,
    migrate_to,
    reported,
    start,
    tenant_engine,
    tenant_snapshot,
    version_of,
)


def test_kill_9_mid_migration_leaves_the_previous_revision(steps, tmp_path):
    env = steps
    migrate_to(env, "victim", "r1")
    before = tenant_snapshot(env, "victim")
    marker = tmp_path / "inside-step-2"
    run = start(env, "upgrade", "--all-tenants", STEPS_SLEEP="60", STEPS_MARKER=str(marker))
    deadline = time.time() + 60
    while not marker.exists():
        assert run.poll() is None, run.communicate()  # died before step 2
        assert time.time() < deadline, "the run never reached step 2"
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)  # step 2's table exists in the open transaction now
    run.communicate()

    assert version_of(env, "victim") == ("r1",)
    assert tenant_snapshot(env, "victim") == before
    assert applied(env, "victim") == ["r1"]

    rerun = start(env, "upgrade", "--all-tenants")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert version_of(env, "victim") == ("r3",)
    assert applied(env, "victim") == ["r1", "r2", "r3"]


def test_one_tenant_failing_at_step_2_of_3_among_20(steps):
    env = steps
    tenants = [f"t{i:02d}" for i in range(20)]
    for tenant in tenants:
        migrate_to(env, tenant, "r1")
    before = tenant_snapshot(env, "t07")
    run = start(env, "upgrade", "--all-tenants", "--json", STEPS_FAIL_TENANT="t07")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 1, err
    rows = {r["tenant_id"]: r for r in reported(out)}
    assert rows["t07"]["action"] == "failed"
    assert rows["t07"]["to_revision"] == "r1"
    assert "step 2 fails for t07 on purpose" in rows["t07"]["message"]
    assert "t07" in err and "step 2 fails for t07" in err
    for tenant in tenants:
        if tenant != "t07":
            assert rows[tenant]["action"] == "upgraded"
            assert version_of(env, tenant) == ("r3",)
            assert applied(env, tenant) == ["r1", "r2", "r3"]
    assert version_of(env, "t07") == ("r1",)
    assert tenant_snapshot(env, "t07") == before
    assert applied(env, "t07") == ["r1"]


def test_fail_fast_and_max_failures_stop_the_run(steps, monkeypatch):
    env = steps
    tenants = [f"t{i}" for i in range(6)]
    for tenant in tenants:
        migrate_to(env, tenant, "r1")
    monkeypatch.setenv("STEPS_FAIL_TENANT", "t2")
    result = cli("upgrade", "--all-tenants", "--fail-fast", "--json")
    assert result.exit_code == 1
    actions = [r["action"] for r in reported(result.stdout)]
    assert actions == ["upgraded", "upgraded", "failed", "not-run", "not-run", "not-run"]
    assert [version_of(env, t) for t in tenants] == [("r3",), ("r3",), ("r1",), ("r1",), ("r1",), ("r1",)]

    result = cli("upgrade", "--all-tenants", "--max-failures", "2", "--json")
    assert result.exit_code == 1
    assert [r["action"] for r in reported(result.stdout)] == [
        "skipped",
        "skipped",
        "failed",
        "upgraded",
        "upgraded",
        "upgraded",
    ]
    result = cli("upgrade", "--all-tenants", "--fail-fast", "--max-failures", "2")
    assert result.exit_code == 2 and "exclude each other" in result.stderr


def test_two_fleet_upgrades_at_once_apply_every_step_exactly_once(steps):
    env = steps
    tenants = [f"t{i:02d}" for i in range(50)]
    for tenant in tenants:
        migrate_to(env, tenant, "r1")
    runs = [start(env, "upgrade", "--all-tenants", "--json", STEPS_SLEEP="0.01") for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    upgraded_by = {}
    for out, _ in outputs:
        for row in reported(out):
            if row["action"] == "upgraded":
                upgraded_by.setdefault(row["tenant_id"], 0)
                upgraded_by[row["tenant_id"]] += 1
    assert upgraded_by == {t: 1 for t in tenants}  # each tenant migrated by exactly one of the runs
    for tenant in tenants:
        assert version_of(env, tenant) == ("r3",)
        assert applied(env, tenant) == ["r1", "r2", "r3"]


def test_sixteen_first_accesses_provision_one_tenant_once(env):
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3
    with context.Pool(16) as pool:
        actions = pool.starmap(ensure_in_child, [(str(env.config_file), str(env.workdir), "newco", start_at)] * 16)
    assert sorted(actions) == ["provisioned"] + ["skipped"] * 15
    assert version_of(env, "newco") == (env_head := head(),)
    assert set(tenant_snapshot(env, "newco")["tables"]) == head_tables()
    rows = json.loads(cli("status", "--json").stdout)
    assert [(r["tenant_id"], r["revision"]) for r in rows] == [("newco", env_head)]


def test_a_migration_blocked_by_an_application_lock_fails_instead_of_hanging(env):
    migrate_to(env, "busy", "s4_docex_2_6_1")
    if env.kind == "postgres":
        app_engine = tenant_engine(env, "busy")
        holder = app_engine.connect()
        holder.exec_driver_sql("LOCK TABLE docbasket IN ACCESS EXCLUSIVE MODE")  # an open transaction
        args, expected = ["--lock-timeout", "1"], "lock timeout"
    else:
        holder = sqlite3.connect(env.workdir / env.namespace("busy"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # an application writing to the tenant's file
        args, expected = ["--tenant-lock-wait", "1"], "database is locked"
    started = time.monotonic()
    try:
        result = cli("upgrade", "--tenant", "busy", *args)
    finally:
        holder.rollback() if env.kind == "sqlite" else holder.close()
        if env.kind == "sqlite":
            holder.close()
        else:
            app_engine.dispose()
    assert time.monotonic() - started < 30
    assert result.exit_code == 1
    assert expected in result.stdout and ("--lock-timeout" in result.stdout or "--tenant-lock-wait" in result.stdout)
    assert version_of(env, "busy") == ("s4_docex_2_6_1",)
    assert cli("upgrade", "--tenant", "busy").exit_code == 0


def test_parallel_jobs_return_failures_as_values(steps):
    env = steps
    tenants = [f"p{i}" for i in range(8)]
    for tenant in tenants:
        migrate_to(env, tenant, "r1")
    run = start(env, "upgrade", "--all-tenants", "--jobs", "3", "--json", STEPS_FAIL_TENANT="p5")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 1, err
    rows = {r["tenant_id"]: r for r in reported(out)}
    assert list(rows) == tenants  # reported in tenant order, whatever order they finished in
    assert {t: r["action"] for t, r in rows.items()} == {t: "failed" if t == "p5" else "upgraded" for t in tenants}
    assert [version_of(env, t) for t in tenants] == [("r1",) if t == "p5" else ("r3",) for t in tenants]
    assert all(applied(env, t) == (["r1"] if t == "p5" else ["r1", "r2", "r3"]) for t in tenants)

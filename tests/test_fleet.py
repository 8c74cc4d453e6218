"""Fleet scheduling: shards split a fleet stably; --jobs gives the same outcome as serial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli, head, migrate_to, reported, version_of

from docex_migrate.api import in_shard
from docex_migrate.errors import UsageError
from docex_migrate.executors import WorkItem, execute
from docex_migrate.results import Action


def test_shards_partition_the_fleet_stably():
    fleet = {f"tenant-{i}": f"ns{i}" for i in range(1000)}
    shards = [in_shard(fleet, (k, 4)) for k in range(4)]
    assert sorted(t for shard in shards for t in shard) == sorted(fleet)  # every tenant exactly once
    assert all(200 < len(shard) < 300 for shard in shards)  # roughly even
    assert in_shard(fleet, (2, 4)) == shards[2]  # the same on every run and machine
    assert in_shard({"acme-corp": "x"}, (0, 1)) == {"acme-corp": "x"}
    with pytest.raises(UsageError):
        in_shard(fleet, (4, 4))


def test_cli_shard_and_jobs(env):
    tenants = [f"t{i}" for i in range(6)]
    assert cli("provision", *tenants, "--jobs", "2").exit_code == 0
    assert cli("downgrade", "s5", "--all-tenants", "--yes", "--jobs", "2").exit_code == 0
    seen = []
    for k in range(3):
        result = cli("upgrade", "--all-tenants", "--shard", f"{k}/3", "--json")
        assert result.exit_code == 0, result.output
        seen += [r["tenant_id"] for r in reported(result.stdout)]
        status = json.loads(cli("status", "--shard", f"{k}/3", "--json").stdout)
        assert {r["state"] for r in status} <= {"current"}
    assert sorted(seen) == tenants
    assert {version_of(env, t) for t in tenants} == {(head(),)}
    for bad in ("3/3", "x/2", "1", "-1/2"):
        result = cli("upgrade", "--all-tenants", "--shard", bad)
        assert result.exit_code == 2 and "--shard" in result.stderr


def test_a_tenant_dropped_between_the_plan_and_its_turn_fails_alone_and_says_why(env):
    """The plan saw both tenants versioned; one is dropped (deprovisioned, say) before its turn.
    It fails with a message naming it, not a bare SQL error (PostgreSQL reads the version rows
    in the lock's round trip), and the run goes on to upgrade the other."""
    for tenant in ("gone", "kept"):
        migrate_to(env, tenant, "s5_docex_2_8_4")
    backend = env.backend
    items = [WorkItem(t, env.namespace(t), "s5_docex_2_8_4", head(), versioned=True) for t in ("gone", "kept")]
    if env.kind == "sqlite":
        Path(env.namespace("gone")).unlink()
    else:
        with env.engine().begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{env.namespace("gone")}" CASCADE')
    try:
        results = {r.tenant_id: r for r in execute(env.settings, backend, items)}
    finally:
        backend.dispose()
    assert (results["gone"].action, results["kept"].action) == (Action.FAILED, Action.UPGRADED)
    assert "gone" in results["gone"].message and "relation" not in results["gone"].message
    assert version_of(env, "kept") == (head(),)

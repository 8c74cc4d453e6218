"""Fresh tenants get the chain's own recorded statements replayed: the same result as running
the chain, data and alembic_version included, unless a revision says it cannot be replayed."""

from __future__ import annotations

from pathlib import Path

from helpers import applied, head, migrate_to, tenant_snapshot, version_of
from test_reliability import STEPS

from docex_migrate import api, fresh
from docex_migrate.chain import SCRIPT_LOCATION_ENV, load_chain

ROOT = Path(__file__).resolve().parents[1]


def test_replayed_tenant_equals_a_tenant_migrated_by_the_chain(env):
    assert fresh.template(env.settings, load_chain())  # the fast path is in use
    (result,) = api.provision(env.settings, ["replayed"])
    assert result.action == "provisioned"
    migrate_to(env, "migrated", head())
    assert tenant_snapshot(env, "replayed") == tenant_snapshot(env, "migrated")
    assert version_of(env, "replayed") == version_of(env, "migrated") == (head(),)


def test_replay_includes_the_data_revisions_write(env, monkeypatch):
    monkeypatch.setenv(SCRIPT_LOCATION_ENV, str(STEPS))
    (result,) = api.provision(env.settings, ["seeded"])
    assert result.action == "provisioned"
    assert applied(env, "seeded") == ["r1", "r2", "r3"]
    assert version_of(env, "seeded") == ("r3",)


def test_a_revision_can_turn_replay_off(env, chain_copy):
    s7 = chain_copy / "versions" / f"{head()}.py"
    s7.write_text(s7.read_text() + "\nreplayable = False  # e.g. it reads the tenant id\n")
    assert fresh.template(env.settings, load_chain()) is None
    (result,) = api.provision(env.settings, ["slow_path"])
    assert result.action == "provisioned" and version_of(env, "slow_path") == (head(),)

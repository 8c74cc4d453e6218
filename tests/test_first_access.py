"""ensure_tenant on every request (first_access.py, issue 22): a tenant at head is answered by one
read of its version rows, exactly as the full path answers; every other tenant takes the full
path; a ReadyTenants cache answers without reading at all, until the chain changes."""

from __future__ import annotations

import sqlalchemy as sa
from helpers import head, migrate_to, tenant_engine, version_of
from next_revision import NEXT_REVISION, TABLE

from docex_migrate import api
from docex_migrate.chain import load_chain
from docex_migrate.first_access import ReadyTenants, at_head
from docex_migrate.results import Action


def _set_version(env, tenant_id: str, revision: str) -> None:
    """Change the tenant's version row behind docex-migrate's back."""
    engine = tenant_engine(env, tenant_id)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_a_tenant_at_head_is_answered_as_the_full_path_answers(env):
    api.provision(env.settings, ["acme"])
    full = api.provision(env.settings, ["acme"], exist_ok=True)[0]
    fast = api.ensure_tenant("acme", env.settings)
    assert fast == full and (fast.action, fast.to_revision) == (Action.SKIPPED, head())
    backend = env.backend
    try:
        assert at_head(env.settings, backend, load_chain(), "acme") == full
        assert backend.version_rows("acme") == (head(),)
    finally:
        backend.dispose()


def test_any_other_tenant_is_left_to_the_full_path(env):
    """Missing, behind, at base or corrupt: no answer from the fast path, nothing created; the
    full path then provisions, upgrades or refuses as it always did."""
    backend, chain = env.backend, load_chain()
    before = env.everything()
    try:
        assert (backend.version_rows("nobody"), at_head(env.settings, backend, chain, "nobody")) == (None, None)
        assert env.everything() == before  # read-only: no file, no schema
        migrate_to(env, "behind", chain.order[-2])
        migrate_to(env, "at_base", None)
        assert backend.version_rows("behind") == (chain.order[-2],)
        for tenant_id in ("behind", "at_base"):
            assert at_head(env.settings, backend, chain, tenant_id) is None
    finally:
        backend.dispose()
    assert api.ensure_tenant("behind", env.settings).action == Action.UPGRADED
    assert api.ensure_tenant("nobody", env.settings).action == Action.PROVISIONED
    assert version_of(env, "behind") == version_of(env, "nobody") == (head(),)


def test_a_cached_tenant_is_not_read_again(env):
    cache = ReadyTenants()
    first = api.ensure_tenant("acme", env.settings, cache=cache)
    assert first.action == Action.PROVISIONED and len(cache) == 1
    behind = load_chain().order[-2]
    api.downgrade(env.settings, ["acme"], behind)  # seen by any read, not by the cache
    again = api.ensure_tenant("acme", env.settings, cache=cache)
    assert (again.action, again.to_revision) == (Action.SKIPPED, head())
    assert version_of(env, "acme") == (behind,)  # nothing read, nothing done
    cache.forget("acme")
    assert api.ensure_tenant("acme", env.settings, cache=cache).action == Action.UPGRADED
    assert version_of(env, "acme") == (head(),)


def test_the_cache_is_emptied_when_the_chain_changes(env, chain_copy):
    cache = ReadyTenants()
    old_head = load_chain().head
    api.ensure_tenant("acme", env.settings, cache=cache)
    # A revision of its own (make test-next-revision's zz_next_revision may already be the head).
    added = NEXT_REVISION.replace("zz_next_revision", "zz_cache_test").replace(TABLE, "cache_test_note").format(head=old_head)
    (chain_copy / "versions" / "zz_cache_test.py").write_text(added)
    result = api.ensure_tenant("acme", env.settings, cache=cache)
    assert (result.action, result.from_revision, result.to_revision) == (Action.UPGRADED, old_head, "zz_cache_test")
    assert version_of(env, "acme") == ("zz_cache_test",)
    assert api.ensure_tenant("acme", env.settings, cache=cache).action == Action.SKIPPED

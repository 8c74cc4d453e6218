"""Small helpers shared by the tests: open a tenant, snapshot it, migrate it to a revision."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from docex_migrate import revision_snapshots
from docex_migrate.chain import load_chain
from docex_migrate.runner import migrate_tenant
from docex_migrate.snapshot import snapshot

# The revision that is DocEX 2.9.10's schema, the newest release. Not necessarily the head: a
# revision may be added on top (tests that mean "the head" ask the chain, head()).
DOCEX_2_9_10 = "s7_docex_2_9_10"


def head() -> str:
    return load_chain().head


def recognised_as(settings, revision: str) -> str:
    """The revision adopt stamps on a tenant whose schema is ``revision``'s: the newest revision
    with exactly that schema (a later revision that changes nothing has the same one)."""
    chain = load_chain()
    snaps = revision_snapshots.for_chain(settings, chain)
    return [r for r in chain.order if snaps[r] == snaps[revision]][-1]


def tenant_engine(env, tenant_id: str) -> sa.Engine:
    """A plain engine on the tenant (search_path set at connect on PostgreSQL)."""
    if env.kind == "sqlite":
        return sa.create_engine(f"sqlite:///{env.namespace(tenant_id)}", poolclass=NullPool)
    return sa.create_engine(env.url, poolclass=NullPool, connect_args={"options": f"-csearch_path={env.namespace(tenant_id)}"})


def applied(env, tenant_id: str) -> list[str]:
    """The steps the small chain tests/chains/steps recorded in the tenant, in order."""
    engine = tenant_engine(env, tenant_id)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT step FROM applied ORDER BY step")).scalars().all()
    engine.dispose()
    return list(rows)


def tenant_snapshot(env, tenant_id: str) -> dict:
    engine = tenant_engine(env, tenant_id)
    try:
        with engine.connect() as conn:
            return snapshot(conn, None if env.kind == "sqlite" else env.namespace(tenant_id))
    finally:
        engine.dispose()


def migrate_to(env, tenant_id: str, revision: str | None, *, downgrade: bool = False) -> None:
    backend = env.backend
    try:
        migrate_tenant(backend, tenant_id, revision, downgrade=downgrade, create=not downgrade)
    finally:
        backend.dispose()


def version_of(env, tenant_id: str) -> tuple[str, ...]:
    return env.backend.read_states([tenant_id])[tenant_id].revisions


def ensure_in_child(config_file: str, workdir: str, tenant_id: str, start_at: float) -> str:
    """Run ensure_tenant in a spawned process, all children starting at the same instant."""
    import os
    import time

    from docex_migrate import ensure_tenant, load_settings

    os.chdir(workdir)
    settings = load_settings(config_file)
    time.sleep(max(0.0, start_at - time.time()))
    return ensure_tenant(tenant_id, settings).action

"""Provisioning fresh namespaces fast: what the chain produces, without Alembic per tenant.

Running the whole chain through Alembic costs ~100 ms a tenant, mostly Python; the SQL itself
is a few ms. So once per process the chain is run for real on a scratch namespace, and a fresh
tenant gets its result, in one transaction under its lock:

- PostgreSQL: the head schema. The scratch schema is migrated to head and committed, and
  ``pg_dump`` of it (tables, rows and alembic_version as INSERTs, sequence values, functions,
  triggers, views, grants, comments) is sent for each tenant in one round trip, the scratch
  schema's name replaced by the tenant's. Replaying the history instead would redo all seven
  generations (enum types created and dropped, indexes redefined, columns retyped): ~1.5x the
  server's work. Before any tenant gets the dump it is proven once: replayed into a second
  scratch schema, whose own pg_dump must equal the first. When pg_dump is not installed, fails
  (e.g. older than the server), or the proof fails, the reason is logged and tenants get the
  chain's own statements instead, recorded on a scratch schema in a transaction that is rolled
  back and replayed in one pipeline: exact by construction, slower to replay.
- SQLite: the chain migrates a scratch file to head, and a fresh tenant gets a copy of that
  file, linked into place atomically (never over an existing file).

Either way the tenant's schema, data and alembic_version are what the chain would have
produced, because they come from the chain's own run, which on an empty namespace does not
depend on anything else.

The template is built here, through the backend's interface: the chain migrates a namespace of
the backend's fresh_workspace to head (runner.migrate_tenant), the backend captures it
(capture_head) and installs it into each fresh tenant (install_fresh); when it cannot be
captured, the chain's statements are recorded on a scratch namespace (runner.record_chain).

PostgreSQL keeps the proven head dump in the tool's own schema (backends/postgresql/
kept_template.py), keyed by the chain's content and what else the dump depends on, verified by
its digest when read: pg_dump reads the whole catalog whatever ``--schema`` says (seconds at
10,000 tenants), so it runs once per chain and database, not once per command, and a command
finding the kept dump costs one indexed read whatever the number of tenants.

A template pays off over several tenants: building one costs at least a run of the chain
(~0.1 s; PostgreSQL's head schema ~0.35 s in an empty database: that run committed, two pg_dumps
and the proof). So a provision with one fresh tenant runs the chain on it directly, unless this
process has a template already or the database keeps one (an application provisioning on first
access builds none; it uses the dump a provision kept, else each new tenant runs the chain).

The contract that makes this exact: on an empty namespace a revision does the same thing for
every tenant. A revision that does not (it reads the tenant id, the clock or random numbers)
sets ``replayable = False`` at module level, and then every tenant runs the chain itself.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

from .backends import Backend, FreshTemplate, open_backend
from .chain import Chain
from .config import Settings
from .runner import migrate_tenant, record_chain

log = logging.getLogger(__name__)


def replayable(chain: Chain) -> bool:
    return all(getattr(chain.script.get_revision(r).module, "replayable", True) for r in chain.order)


def template(settings: Settings, chain: Chain, fresh_tenants: int = 2, backend: Backend | None = None) -> FreshTemplate | None:
    """What a fresh tenant of this backend gets, built from the chain itself once per process,
    or once per chain and database where the backend keeps it (Backend.kept_fresh); None when
    the chain must not be replayed, or when there is one fresh tenant to provision and no
    template yet, neither in this process nor kept (running the chain on it is cheaper than
    building one). ``backend``: the caller's, on ``settings``' database (else one is opened)."""
    key = f"fresh-template:{settings.database_type}"
    if chain.has_cached(key) or not replayable(chain):
        if not chain.has_cached(key):
            log.info("a revision sets replayable = False: fresh tenants run the chain itself")
        return chain.cached(key, lambda: None)
    with nullcontext(backend) if backend is not None else open_backend(settings) as opened:
        if fresh_tenants < 2:
            kept = opened.stored_fresh(chain.fingerprint)
            return None if kept is None else chain.cached(key, lambda: kept)
        return chain.cached(key, lambda: opened.kept_fresh(chain.fingerprint, lambda: build_template(opened, chain)))


def build_template(backend: Backend, chain: Chain) -> FreshTemplate:
    """The head namespace captured from the backend's fresh workspace, where the chain migrated
    it; when that cannot be had, every statement the chain sends to an empty namespace on its way
    to head, recorded on a scratch namespace in a transaction that is rolled back."""
    with backend.fresh_workspace() as workspace:
        if isinstance(workspace, str):
            why = workspace
        else:
            migrate_tenant(workspace, "head", chain.head, create=True, chain=chain)
            captured = workspace.capture_head("head", chain.head)
            if not isinstance(captured, str):
                return captured
            why = captured
    log.info("%s: fresh tenants replay the chain's recorded statements instead of the head schema", why)
    with backend.scratch_template() as scratch_names:
        scratch = backend.with_template(scratch_names)
        try:
            return record_chain(scratch, "recording", chain, chain.head)
        finally:
            scratch.dispose()

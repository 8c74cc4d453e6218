"""Provisioning fresh namespaces fast: what the chain produces, without Alembic per tenant.

Running the whole chain through Alembic costs ~100 ms a tenant, mostly Python; the SQL itself
is a few ms. So once per process the chain is run for real on a scratch namespace, and a fresh
tenant gets its result:

- PostgreSQL: every statement the chain sent is recorded (in a transaction that is rolled
  back) and replayed for the tenant, in one transaction under its lock;
- SQLite: the chain migrates a scratch file to head, and a fresh tenant gets a copy of that
  file, linked into place atomically (never over an existing file).

Either way the tenant's schema, data and alembic_version are what the chain would have
produced, because they come from the chain's own run, which on an empty namespace does not
depend on anything else.

The contract that makes this exact: on an empty namespace a revision does the same thing for
every tenant. A revision that does not (it reads the tenant id, the clock or random numbers)
sets ``replayable = False`` at module level, and then every tenant runs the chain itself.
"""

from __future__ import annotations

import logging

from .backends import FreshTemplate, open_backend
from .chain import Chain
from .config import Settings

log = logging.getLogger(__name__)


def replayable(chain: Chain) -> bool:
    return all(getattr(chain.script.get_revision(r).module, "replayable", True) for r in chain.order)


def template(settings: Settings, chain: Chain) -> FreshTemplate | None:
    """What a fresh tenant of this backend gets, built once per process from the chain itself;
    None when the chain must not be replayed."""

    def build() -> FreshTemplate | None:
        if not replayable(chain):
            log.info("a revision sets replayable = False: fresh tenants run the chain itself")
            return None
        with open_backend(settings) as backend:
            return backend.fresh_template(chain)

    return chain.cached(f"fresh-template:{settings.database_type}", build)

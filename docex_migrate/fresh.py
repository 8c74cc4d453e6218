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

import atexit
import logging
from contextlib import ExitStack
from pathlib import Path

from .backends import Backend, SqliteBackend, backend_for
from .chain import Chain
from .config import Settings
from .runner import Recorded, migrate_tenant, record_chain
from .scratch import locked_directory, scratch_settings

log = logging.getLogger(__name__)

Template = Path | list[Recorded]  # a head file (SQLite) or the chain's statements (PostgreSQL)
_TEMPLATES: dict[tuple, Template | None] = {}
_HELD = ExitStack()  # the head files' directories, removed when the process exits
atexit.register(_HELD.close)


def replayable(chain: Chain) -> bool:
    return all(getattr(chain.script.get_revision(r).module, "replayable", True) for r in chain.order)


def template(settings: Settings, chain: Chain) -> Template | None:
    """What a fresh tenant of this backend kind gets, built once per process from the chain
    itself; None when the chain must not be replayed."""
    key = (settings.database_type, chain.fingerprint)
    if key not in _TEMPLATES:
        if not replayable(chain):
            log.info("a revision sets replayable = False: fresh tenants run the chain itself")
            _TEMPLATES[key] = None
        elif settings.postgres is None:
            _TEMPLATES[key] = _sqlite_head_file(chain)
        else:
            with scratch_settings(settings) as scratch:
                backend: Backend = backend_for(scratch)
                try:
                    _TEMPLATES[key] = record_chain(backend, "recording", chain.head)
                finally:
                    backend.dispose()
    return _TEMPLATES[key]


def _sqlite_head_file(chain: Chain) -> Path:
    """The head file, in a directory held for the life of the process (a killed process's
    directory is swept by the next one, see scratch.locked_directory)."""
    directory = _HELD.enter_context(locked_directory("docex_migrate_template_", sweep=True))
    backend = SqliteBackend(f"{directory}/{{tenant_id}}.db")
    migrate_tenant(backend, "head", chain.head, create=True)
    return directory / "head.db"

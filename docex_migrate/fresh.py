"""Provisioning fresh namespaces fast: replay what the chain does, without Alembic per tenant.

Running the whole chain through Alembic costs ~100 ms a tenant, mostly Python; the SQL itself
is a few ms. So once per process the chain is run for real on a scratch namespace (in a
transaction that is rolled back) while every statement is recorded; a fresh tenant then gets
the same statements, in one transaction under its lock. Its schema, its data and its
alembic_version are what the chain would have produced, because they are the chain's own
statements, which on an empty namespace do not depend on anything else.

The contract that makes this exact: on an empty namespace a revision does the same thing for
every tenant. A revision that does not (it reads the tenant id, the clock or random numbers)
sets ``replayable = False`` at module level, and then every tenant runs the chain itself.
"""

from __future__ import annotations

import logging

from .backends import Backend, backend_for
from .chain import Chain
from .config import Settings
from .runner import Recorded, record_chain
from .scratch import scratch_settings

log = logging.getLogger(__name__)

_RECORDINGS: dict[tuple, list[Recorded] | None] = {}


def replayable(chain: Chain) -> bool:
    return all(getattr(chain.script.get_revision(r).module, "replayable", True) for r in chain.order)


def recording(settings: Settings, chain: Chain) -> list[Recorded] | None:
    """The chain's statements from base to head on this backend kind, once per process;
    None when the chain must not be replayed."""
    key = (settings.database_type, chain.fingerprint)
    if key not in _RECORDINGS:
        if not replayable(chain):
            log.info("a revision sets replayable = False: fresh tenants run the chain itself")
            _RECORDINGS[key] = None
        else:
            with scratch_settings(settings) as scratch:
                backend: Backend = backend_for(scratch)
                try:
                    _RECORDINGS[key] = record_chain(backend, "recording", chain.head)
                finally:
                    backend.dispose()
    return _RECORDINGS[key]

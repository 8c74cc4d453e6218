"""PostgreSQL: one schema per tenant, at DocEX's ``schema_template``, in one database.

PostgresBackend is composed of one class per job, each in its module:

- connections.py: connecting, one-line connection failures, the connection budget, pg_dump's
  connection;
- sessions.py: a tenant's transaction (lock, scope, timeouts, guard, commit, the kept
  connection) and the review script that mirrors it;
- catalog_reads.py: discovery, states and fingerprints of many tenants, read-only;
- scratch.py: scratch schema sets, held while in use and swept when abandoned;
- fresh.py: the head schema's dump (or the chain's recording) installed into fresh tenants;
- kept_template.py: the head dump kept in the tool's own schema, reused by later commands;
- deprovision.py (with backup.py): a tenant's schema backed up, proven, and dropped exactly;
- ledger_place.py: where the run ledger lives.
"""

from __future__ import annotations

from ..base import HeadDump
from .backup import driver_dump
from .catalog_reads import PostgresCatalogReads
from .deprovision import PostgresDeprovision
from .fresh import PostgresFresh
from .kept_template import PostgresKeptTemplate
from .ledger_place import PostgresLedgerPlace
from .scratch import SCRATCH_PREFIX, PostgresScratch
from .sessions import ends_transaction, scope_to

__all__ = ["SCRATCH_PREFIX", "HeadDump", "PostgresBackend", "driver_dump", "ends_transaction", "scope_to"]


class PostgresBackend(
    PostgresFresh, PostgresKeptTemplate, PostgresDeprovision, PostgresCatalogReads, PostgresScratch, PostgresLedgerPlace
):
    """Every job of the PostgreSQL backend: see the module's docstring."""

    def with_template(self, template: str) -> PostgresBackend:
        return PostgresBackend(self.url, template, self.timeouts)

"""PostgreSQL: where the run ledger lives (Backend.ledger): its own schema of the tenants'
database, its sessions, who holds its locks when a ledger statement waits too long, and the
key of the fleet."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ... import tenants
from ...errors import DatabaseUnavailableError
from ..base import LedgerPlace
from .connections import PostgresConnections, ms

# Who holds the ledger's tables in a mode that blocks its reads or writes (what a ledger
# statement waits for), asked once its wait has run out.
_LEDGER_LOCKS = sa.text("""
SELECT l.relation::regclass::text, l.mode, a.pid, a.usename, a.application_name, a.state,
       date_trunc('second', now() - coalesce(a.xact_start, a.backend_start))
FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_backend_pid() AND l.locktype = 'relation'
  AND l.mode NOT IN ('AccessShareLock', 'RowShareLock', 'RowExclusiveLock')
  AND (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = l.relation)  -- by oid: pg_class is the fleet's
      = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = :schema)
ORDER BY 1, 3
""")


_DATABASE_OID = sa.text("SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()")


def _holder(table: str, mode: str, pid: int, user: str | None, application: str | None, state: str | None, held: Any) -> str:
    return f"table {table} is held in {mode} by pid {pid} (user {user}, application {application!r}, {state} for {held})"


class PostgresLedgerPlace(PostgresConnections):
    """Backend.ledger."""

    def ledger(self) -> LedgerPlace:
        """The schema tenants.LEDGER_SCHEMA of the same database (reserved: never a tenant's).
        Its sessions autocommit each statement without waiting for the WAL flush: a row lost to a
        server crash is made good by reconciliation (run_history.py), and each row costs one round trip,
        not an fsync."""
        schema = tenants.LEDGER_SCHEMA

        def exists() -> bool:
            with self.connect() as connection:
                return bool(connection.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f'"{schema}".runs'}).scalar())

        wait, where = self.ledger_lock_wait, f"schema {schema} of {self.where()}"

        def engine(write: bool) -> Engine:
            # Bounded: a ledger table locked by another session (LOCK TABLE, a long ALTER) fails
            # the statement past the wait (55P03), never hangs the run; a ledger statement takes
            # milliseconds, so one running twice the wait is stuck (57014).
            options = (
                "-csynchronous_commit=off -capplication_name=docex-migrate-ledger"
                f" -clock_timeout={ms(wait)} -cstatement_timeout={ms(2 * wait)}"
            )
            # Autocommit: each ledger write is one statement, so one round trip, not BEGIN/.../COMMIT.
            return sa.create_engine(
                self.url,
                poolclass=NullPool,
                isolation_level="AUTOCOMMIT",
                connect_args={"connect_timeout": 10, "options": options},
            )

        def explain_wait(exc: BaseException) -> str | None:
            sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
            if sqlstate == "57014":
                return f"a statement on the run ledger ({where}) ran past {2 * wait:g}s: see what else the database is running"
            if sqlstate != "55P03":
                return None
            try:
                with self.connect() as connection:
                    holders = [_holder(*row) for row in connection.execute(_LEDGER_LOCKS, {"schema": schema})]
            except (DatabaseUnavailableError, DBAPIError):
                holders = []
            held = "; ".join(holders) or "by another session, gone since"
            return (
                f"the run ledger ({where}) waited more than {wait:g}s for a lock on its tables: {held}; "
                "end that transaction (or pg_terminate_backend(pid)) and retry"
            )

        fleet, aliases = self._fleet()
        return LedgerPlace(schema, where, fleet, exists, engine, explain_wait, aliases)

    def _fleet(self) -> tuple[str, tuple[str, ...]]:
        """The fleet's key in the ledger: the database's oid, as the server says, and the
        template. The ledger lives in that database, so the oid tells it from nothing but a
        database dropped and created again, and every role may read it (pg_database). Not the
        cluster's system identifier: pg_control_system() may be revoked, which would key one
        fleet two ways by role, and pg_upgrade changes it while the database and its ledger stay.
        Older docex-migrates keyed it by the host as spelled: that key is an alias."""
        with self.connect() as connection:
            database = connection.execute(_DATABASE_OID).scalar_one()
        return f"PostgreSQL database {database} {self.template}", (f"PostgreSQL {self.where()} {self.template}",)

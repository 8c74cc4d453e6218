"""PostgreSQL: the head dump kept in the tool's own schema (tenants.LEDGER_SCHEMA), so that a
command reuses it instead of building it again. Building costs a run of the chain and two
pg_dumps, and pg_dump reads the whole catalog whatever ``--schema`` says (seconds at 10,000
tenants); reading the kept one is one primary-key lookup, whatever the number of tenants.

A kept dump is used only where it was built for: its key is a digest of the chain's content and
of everything else the dump depends on (this tool's version and the dump's format, the server's
version, the role, its default privileges, the session's default tablespace and table access
method). A row whose content does not match its stored digest (edited, truncated, or written by
something else) is ignored and rebuilt; so is one whose placeholder is not a scratch schema's
name. Commands that build at once take turns under an advisory lock on the key: the second finds
the first's dump. Whoever may not create the schema or its table builds a dump for the process
alone, as before."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ... import __version__, tenants
from ...errors import DatabaseUnavailableError
from ..base import FreshTemplate, HeadDump
from .connections import PostgresConnections, first_line, ms
from .scratch import _SCRATCH_SET

log = logging.getLogger(__name__)
T = TypeVar("T")

FORMAT = 1  # how the head dump is rewritten (fresh.head_dump): a change makes every kept row stale
TABLE = f'"{tenants.LEDGER_SCHEMA}".fresh_templates'
KEPT_FOR_DAYS = 30  # rows of other keys older than this are removed when a new one is kept
BUILD_WAIT = 600.0  # seconds a command waits for another building the same template, then builds its own

# What the head dump depends on besides the chain. Default privileges: only the role's own and
# database-wide ones (defaclnamespace 0) apply to a schema created later; read by the index on
# (defaclrole, defaclnamespace, defaclobjtype).
_ENVIRONMENT = sa.text(
    "SELECT current_setting('server_version_num'), current_user,"
    " current_setting('default_tablespace'), current_setting('default_table_access_method'),"
    " coalesce((SELECT string_agg(d.defaclobjtype::text || d.defaclacl::text, ';' ORDER BY d.defaclobjtype)"
    "  FROM pg_catalog.pg_default_acl d WHERE d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)"
    "  AND d.defaclnamespace = 0), ''),"
    f" to_regclass('{TABLE}') IS NOT NULL"
)
_READ = sa.text(f"SELECT placeholder, sql, digest FROM {TABLE} WHERE key = :key")
_CREATE = (
    f'CREATE SCHEMA IF NOT EXISTS "{tenants.LEDGER_SCHEMA}"',
    f"CREATE TABLE IF NOT EXISTS {TABLE} (key text PRIMARY KEY, chain text NOT NULL, role text NOT NULL,"
    " placeholder text NOT NULL, sql text NOT NULL, digest text NOT NULL, made_at timestamptz NOT NULL DEFAULT now())",
)
_WRITE = sa.text(
    f"INSERT INTO {TABLE} (key, chain, role, placeholder, sql, digest) VALUES (:key, :chain, current_user, :placeholder, :sql, :digest)"
    " ON CONFLICT (key) DO UPDATE SET chain = EXCLUDED.chain, role = EXCLUDED.role, placeholder = EXCLUDED.placeholder,"
    " sql = EXCLUDED.sql, digest = EXCLUDED.digest, made_at = EXCLUDED.made_at"
)
_PRUNE = sa.text(f"DELETE FROM {TABLE} WHERE key <> :key AND made_at < now() - make_interval(days => {KEPT_FOR_DAYS})")


def _digest(key: str, placeholder: str, sql: str) -> str:
    return hashlib.sha256("\0".join((key, placeholder, sql)).encode()).hexdigest()


class PostgresKeptTemplate(PostgresConnections):
    """Backend.kept_fresh and stored_fresh."""

    def stored_fresh(self, chain_fingerprint: str) -> FreshTemplate | None:
        """The kept head dump for this chain here, verified; None when there is none (or it
        cannot be read: the caller then builds or runs the chain). Two round trips on a
        connection of its own, in autocommit (no BEGIN or ROLLBACK to wait for)."""
        try:
            connection = self.connect().execution_options(isolation_level="AUTOCOMMIT")
        except DatabaseUnavailableError:
            return None
        with connection:
            return _attempt(
                connection, "read", lambda: self._kept_read(connection, *self._kept_key(connection, chain_fingerprint))
            )

    def kept_fresh(self, chain_fingerprint: str, build: Callable[[], FreshTemplate]) -> FreshTemplate:
        """The kept head dump, or else ``build()``'s template, kept when it is a head dump (a
        recording is only the fallback without pg_dump: cheap to make, not kept). Commands that
        build at once take turns under the key's advisory lock: the later one finds the earlier
        one's dump. The kept template is an optimisation: failing to read or keep it is logged,
        never a command's failure."""
        found = self.stored_fresh(chain_fingerprint)
        if found is not None:
            return found
        try:
            holder = self.connect().execution_options(isolation_level="AUTOCOMMIT")
        except DatabaseUnavailableError:
            return build()
        with holder:
            key = _attempt(holder, "read", lambda: self._kept_key(holder, chain_fingerprint)[0])
            if key is None:
                return build()
            locked = _kept_lock(holder, key)
            try:  # the command we waited for may have kept it (and made the table) meanwhile
                found = _attempt(holder, "read", lambda: self._kept_read(holder, *self._kept_key(holder, chain_fingerprint)))
                if found is not None:
                    return found  # built by the command we waited for
                made = build()
                if isinstance(made, HeadDump):
                    _attempt(holder, "kept", lambda: self._kept_write(holder, key, chain_fingerprint, made))
                return made
            finally:
                if locked:
                    _attempt(holder, "released", lambda: _unlock(holder, key))

    def _kept_key(self, connection: Connection, chain_fingerprint: str) -> tuple[str, bool]:
        """The key, and whether anything is kept here at all (the table exists)."""
        *environment, kept = connection.execute(_ENVIRONMENT).one()
        parts = (str(FORMAT), __version__, chain_fingerprint, *(str(value) for value in environment))
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest(), bool(kept)

    def _kept_read(self, connection: Connection, key: str, kept: bool) -> HeadDump | None:
        row = connection.execute(_READ, {"key": key}).one_or_none() if kept else None
        if row is None:
            return None
        placeholder, sql, digest = row
        if digest != _digest(key, placeholder, sql) or not _SCRATCH_SET.match(placeholder) or placeholder not in sql:
            log.warning("the kept fresh-tenant template in %s does not match its digest: it is built again", TABLE)
            return None
        return HeadDump(sql, placeholder)

    def _kept_write(self, connection: Connection, key: str, chain_fingerprint: str, dump: HeadDump) -> None:
        for statement in _CREATE:  # in autocommit, each on its own: the INSERT alone needs to be atomic
            _created(connection, statement)
        values = {"key": key, "chain": chain_fingerprint, "placeholder": dump.schema, "sql": dump.sql}
        connection.execute(_WRITE, {**values, "digest": _digest(key, dump.schema, dump.sql)})
        connection.execute(_PRUNE, {"key": key})


def _kept_lock(holder: Connection, key: str) -> bool:
    """The key's session advisory lock (``holder`` is in autocommit), held while the template is
    built and kept; past BUILD_WAIT (another command stuck building) the build goes ahead without it."""
    try:
        holder.exec_driver_sql(f"SET lock_timeout = '{ms(BUILD_WAIT)}'")  # this session's only: it ends with the build
        holder.execute(sa.select(sa.func.pg_advisory_lock(sa.func.hashtextextended(key, 0))))
    except DBAPIError as exc:
        log.info("the fresh-tenant template is built without waiting for other commands building it (%s)", first_line(exc))
        return False
    return True


def _unlock(holder: Connection, key: str) -> None:
    holder.execute(sa.select(sa.func.pg_advisory_unlock(sa.func.hashtextextended(key, 0))))


def _created(connection: Connection, statement: str) -> None:
    """A CREATE ... IF NOT EXISTS, which two sessions running it at once may both try: the
    loser's unique violation means it is there."""
    try:
        connection.exec_driver_sql(statement)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "23505":
            raise


def _attempt(connection: Connection, what: str, step: Callable[[], T]) -> T | None:
    """``step``, or None (logged) when the database refuses it: no privilege on the tool's
    schema, a lost connection."""
    try:
        return step()
    except DBAPIError as exc:
        log.info("the fresh-tenant template could not be %s in %s (%s)", what, TABLE, first_line(exc))
        with suppress(DBAPIError):
            connection.rollback()
        return None

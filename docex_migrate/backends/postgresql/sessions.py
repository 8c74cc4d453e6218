"""PostgreSQL: a tenant's transaction. Its lock, scope and timeouts in one round trip
(lock_tenant), its guard against a revision ending it (ends_transaction), its commit with the
session's reset, the connection kept from tenant to tenant; and the review script that takes
the same lock, scope and timeouts in psql. The per-tenant hot path lives here."""

from __future__ import annotations

import logging
import re
import select
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateSchema

from ...chain import VERSION_TABLE
from ...config import Timeouts
from ...errors import DatabaseUnavailableError, TenantNotFoundError, UnsupportedStepError
from ..base import ENDING_REFUSED
from .connections import PostgresConnections, ms, pg_namespace

log = logging.getLogger(__name__)

INSUFFICIENT_PRIVILEGE = "42501"


def scope_to(connection: Connection, schema: str) -> None:
    """Make ``schema`` the only schema unqualified names resolve to, for the current transaction.

    set_config(..., is_local => true) is SET LOCAL: it ends with the transaction, so it can never
    carry over to the next tenant even on a reused connection, and public is not searched.
    """
    quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
    connection.execute(sa.select(sa.func.set_config("search_path", quoted, True)))


# The wait bound, then the lock, in one round trip: the lock is evaluated for the CTE's row, so
# after the CTE has set lock_timeout. Plain SQL, as every per-tenant statement of ours: building
# and compiling SQLAlchemy expressions per tenant cost more than the round trips.
_LOCK = (
    "WITH bound AS (SELECT set_config('lock_timeout', %(wait)s, true))"
    " SELECT pg_advisory_xact_lock(hashtextextended(%(schema)s, 0)) FROM bound"
)
# Tried first, so that a run that has to wait can say on whom: the lock's holder, from pg_locks
# (a bigint advisory key is classid, its high 32 bits, and objid, its low ones).
_TRY_LOCK = _LOCK.replace("pg_advisory_xact_lock", "pg_try_advisory_xact_lock")
_HOLDER = (
    "SELECT a.pid, a.application_name, a.state, a.xact_start FROM pg_catalog.pg_locks l"
    " JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
    " AND l.classid::bigint = (hashtextextended(%(schema)s, 0) >> 32) & 4294967295"
    " AND l.objid::bigint = hashtextextended(%(schema)s, 0) & 4294967295"
)
# A statement of its own, so it reads the data as of after the lock (READ COMMITTED: each
# statement sees what was committed when it starts): it sees a schema that a run holding the
# lock created (or dropped) while this one waited.
_SETTLE = (
    "SELECT (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s),"
    " set_config('lock_timeout', %(lock)s, true), set_config('statement_timeout', %(statement)s, true)"
)
_SETTLE_AND_SCOPE = _SETTLE + ", set_config('search_path', %(path)s, true)"
_NO_SUCH_TABLE = {"42P01", "3F000"}  # undefined_table, invalid_schema_name
_LOCKED_SCHEMA = "docex_migrate.locked_schema"  # connection.info key: (schema, oid) as lock_tenant found it


def _holders(rows: list[Any]) -> str:
    """'pid N (application_name, state, in a transaction since T)' for each holder of a lock."""
    if not rows:
        return "another session (gone, or not visible to this role)"
    return "; ".join(
        f"pid {pid} ({name or 'no application_name'}, {state}, in a transaction since {since})"
        for pid, name, state, since in rows
    )


def lock_tenant(
    connection: Connection, schema: str, timeouts: Timeouts, *, scope: bool = False, versions: bool = False
) -> tuple[bool, tuple[str, ...] | None]:
    """Take the tenant's advisory lock for this transaction, then set the migration's timeouts
    (and with ``scope`` the search_path, as scope_to does). Returns whether the schema exists.

    The lock is keyed on the schema name and taken before anything is read or created, so two
    runs on one tenant (two deploys, a provision racing an upgrade) go one after the other, and
    the second reads the revision the first left. Waiting for it is bounded by tenant_lock_wait;
    the migration's own statements then by lock_timeout and statement_timeout, all SET LOCAL.
    One round trip in all (two statements). With ``versions`` (the schema's alembic_version is
    known to exist) the second statement also reads its version rows, returned second (else
    None); a schema or table dropped since is TenantNotFoundError. That read waits for a lock on alembic_version under
    tenant_lock_wait (the statement sets lock_timeout as it runs): only a run on the same tenant
    holds that table, so the wait is one for the tenant, like the advisory lock's.
    """
    settings = {"schema": schema, "lock": ms(timeouts.lock_timeout), "statement": ms(timeouts.statement_timeout)}
    if scope:
        settings["path"] = connection.dialect.identifier_preparer.quote_identifier(schema)
    settle = _SETTLE_AND_SCOPE if scope else _SETTLE
    if versions:
        settle += (
            f", ARRAY(SELECT version_num FROM {connection.dialect.identifier_preparer.quote_schema(schema)}.{VERSION_TABLE})"
        )
    driver: Any = connection.connection.driver_connection  # psycopg's Connection
    try:
        # One round trip for BEGIN, the lock and the settings (psycopg's pipeline mode): the
        # server still runs them in order, each seeing what was committed when it starts. On the tenant
        # connection the driver autocommits and the BEGIN is ours (_tenant_transaction): the one
        # psycopg sends itself costs a round trip of its own in a pipeline.
        lock = {"wait": ms(timeouts.tenant_lock_wait), "schema": schema}
        with driver.pipeline():
            if driver.autocommit and driver.info.transaction_status == TransactionStatus.IDLE:
                driver.execute("BEGIN")
            locked = driver.execute(_TRY_LOCK, lock)
            cursor = driver.execute(settle, settings)
        if not locked.fetchone()[0]:  # another run holds it: say who, then wait (what settle read is stale)
            holders = driver.execute(_HOLDER, {"schema": schema}).fetchall()
            log.warning("waiting up to %s for tenant schema %s: its lock is held by %s", lock["wait"], schema, _holders(holders))
            driver.execute(_LOCK, lock)
            cursor = driver.execute(settle, settings)
        row = cursor.fetchone()
    except psycopg.Error as exc:
        if versions and getattr(exc, "sqlstate", None) in _NO_SUCH_TABLE:
            raise TenantNotFoundError(f"schema {schema!r} or its {VERSION_TABLE} was dropped since the plan") from None
        raise DBAPIError.instance(settle, settings, exc, psycopg.Error) from exc  # as SQLAlchemy raises it
    connection.info[_LOCKED_SCHEMA] = (schema, row[0])  # its oid (None: missing), for PostgresBackend.identity
    return row[0] is not None, tuple(row[-1]) if versions else None


# A revision that ends the tenant's transaction (its own COMMIT or ROLLBACK, in SQL or through
# SQLAlchemy) would leave the rest of the tenant unlocked, outside its search_path and, on the
# tenant connection (the driver autocommits), committed statement by statement: refused before
# it is sent. A COMMIT cannot be undone once the server has run it, so the text is read as the
# server's lexer (scan.l) reads it: each statement of a string (comments, quoted strings and
# dollar-quoted bodies skipped), by its first words. ROLLBACK TO SAVEPOINT is not an end; a
# COMMIT inside a function or DO block is refused by the server itself (our BEGIN is explicit).
# Where the reading is unsure it errs towards a refusal: text the server would refuse as a
# syntax error runs nothing, so only a COMMIT the server runs and this reading misses is harmful.
_ENDING_WORDS = {"commit", "end", "abort", "rollback", "prepare"}
_IDENTIFIER_START = r"A-Za-z_\x80-\U0010ffff"  # scan.l works on bytes: every non-ASCII one is a letter
_DOLLAR_TAG = rf"[{_IDENTIFIER_START}][{_IDENTIFIER_START}0-9]*"
_ESCAPED_STRING = r"'(?:[^'\\]|\\.|'')*'"  # E'...', and '...' with standard_conforming_strings off


def _skipped(plain_string: str) -> re.Pattern[str]:
    """What the lexer skips: whitespace (scan.l's six characters only), comments, quoted text."""
    return re.compile(
        r"[ \t\n\r\f\v]+|--[^\n\r]*|" + plain_string + r'|"(?:[^"]|"")*"|(?<![\w$])[eE]' + _ESCAPED_STRING
        + rf"|\$(?P<tag>(?:{_DOLLAR_TAG})?)\$.*?\$(?P=tag)\$",  # $$ too: the tag may be empty
        re.DOTALL,
    )  # fmt: skip


# By standard_conforming_strings: on, a backslash in '...' is a character; off, an escape.
_SKIPPED = {True: _skipped(r"'(?:[^']|'')*'"), False: _skipped(_ESCAPED_STRING)}
_WORD = re.compile(rf"[{_IDENTIFIER_START}][{_IDENTIFIER_START}0-9$]*|\S")


def _statements(sql: str, standard_strings: bool = True) -> Iterator[list[str]]:
    """The words (lower case) and symbols of each statement of ``sql``, as PostgreSQL's lexer
    splits them: whitespace, comments (nested /* */ too) and quoted text are skipped."""
    skipped_at = _SKIPPED[standard_strings].match
    words: list[str] = []
    at = 0
    while at < len(sql):
        if sql.startswith("/*", at):  # nested, unlike a regular expression can match
            depth, at = 1, at + 2
            while depth and at < len(sql):
                if sql.startswith("/*", at):
                    depth, at = depth + 1, at + 2
                elif sql.startswith("*/", at):
                    depth, at = depth - 1, at + 2
                else:
                    at += 1
            continue
        if skipped := skipped_at(sql, at):
            at = skipped.end()
            continue
        token = _WORD.match(sql, at)
        assert token is not None  # \S matches any character the other patterns did not
        at = token.end()
        if token[0] == ";":
            yield words
            words = []
        else:
            words.append(token[0].lower())
    yield words


def _opens_sql_body(words: list[str]) -> bool:
    """Whether ``words`` create a function or procedure whose SQL-standard body (BEGIN ATOMIC,
    PostgreSQL 14+) the statement's ``;`` left open: its inner statements and the END that
    closes it follow as statements of their own. BEGIN ATOMIC outside the argument list's
    parentheses is nothing else in CREATE FUNCTION (psql tracks such bodies too)."""
    kind = words[3:4] if words[1:3] == ["or", "replace"] else words[1:2]
    if words[:1] != ["create"] or kind not in (["function"], ["procedure"]):
        return False
    depth = 0
    for at, word in enumerate(words):
        depth += {"(": 1, ")": -1}.get(word, 0)
        if depth == 0 and words[at : at + 2] == ["begin", "atomic"]:
            return words[at + 2 :] != ["end"]  # BEGIN ATOMIC END: an empty body, closed
    return False


def ends_transaction(sql: str, *, standard_strings: bool = True) -> bool:
    """Whether a statement of ``sql`` is COMMIT, END, ABORT, ROLLBACK (not TO a savepoint) or
    PREPARE TRANSACTION, in any spelling PostgreSQL accepts. ``standard_strings``: the
    session's standard_conforming_strings, which decides what a backslash in '...' is."""
    bodies = 0  # SQL-standard bodies open: an END alone after one's ';' closes it
    for words in _statements(sql, standard_strings):
        if bodies and words == ["end"]:
            bodies -= 1
            continue
        bodies += _opens_sql_body(words)
        first, rest = (words[0], words[1:4]) if words else ("", [])
        if first not in _ENDING_WORDS:
            continue
        if first == "rollback":
            if "to" not in rest[: 2 if rest[:1] in (["work"], ["transaction"]) else 1]:
                return True
        elif first != "prepare" or rest[:1] == ["transaction"]:
            return True
    return False


def _guard(connection: Connection) -> None:
    """On the tenant connection, refuse a statement that would end the tenant's transaction or
    that runs after it ended, and a commit through SQLAlchemy other than _tenant_transaction's."""
    driver: Any = connection.connection.driver_connection  # psycopg's Connection

    def before_cursor_execute(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        # The server parses a string whole, with the setting it has when the string arrives;
        # it reports each change of it (ParameterStatus), so reading it costs no round trip.
        standard = driver.info.parameter_status("standard_conforming_strings") != "off"
        if ends_transaction(statement, standard_strings=standard) or driver.info.transaction_status == TransactionStatus.IDLE:
            raise UnsupportedStepError(ENDING_REFUSED)

    def on_commit(conn: Connection) -> None:  # after commit() the driver is idle: SQLAlchemy's commit sends nothing
        if driver.info.transaction_status != TransactionStatus.IDLE:
            raise UnsupportedStepError(ENDING_REFUSED)

    event.listen(connection, "before_cursor_execute", before_cursor_execute)
    event.listen(connection, "commit", on_commit)


def commit(connection: Connection, *, reset: bool) -> bool:
    """COMMIT the tenant connection's transaction (BEGIN was ours: _tenant_transaction), and with
    ``reset`` return the session to a fresh one's state in the same round trip (DISCARD ALL:
    settings, temporary objects, prepared statements, session advisory locks, LISTENs). A
    statement after a COMMIT starts a transaction of its own, so DISCARD ALL, which refuses to
    run inside one, may follow it in a pipeline. Everything docex-migrate sets is
    transaction-scoped already; the reset also covers what a revision might set for the
    session, so nothing one tenant did reaches the next.

    Raises when the transaction did not commit. Returns whether the session was reset: a reset
    that fails after the commit only costs the connection its reuse, never the tenant."""
    driver: Any = connection.connection.driver_connection  # psycopg's Connection
    if driver.info.transaction_status == TransactionStatus.IDLE:  # ended before its end (_guard)
        raise UnsupportedStepError(ENDING_REFUSED)
    committed = None
    try:
        with driver.pipeline():
            committed = driver.execute("COMMIT")
            if reset:
                driver.execute("DISCARD ALL")
    except psycopg.Error as exc:
        if committed is None or committed.statusmessage != "COMMIT":
            raise DBAPIError.instance("COMMIT", {}, exc, psycopg.Error) from exc  # as SQLAlchemy raises it
        log.debug("not reusing a connection: %s", exc)
        return False
    if committed.statusmessage != "COMMIT":  # the server ends a failed transaction with ROLLBACK
        raise sa.exc.InvalidRequestError(f"the server rolled the transaction back ({committed.statusmessage})")
    return reset


def _ended_by_server(connection: Connection) -> bool:
    """Whether the server has spoken on an idle kept connection: a session it ends
    (pg_terminate_backend, a pooler's or the server's restart) says so before closing, and
    nothing else arrives unasked after DISCARD ALL. Seen without a round trip (a poll of the
    socket), so a dead connection is not handed to the next tenant; a false alarm costs a new
    connection, nothing more."""
    driver: Any = connection.connection.driver_connection  # psycopg's Connection
    if driver.closed:
        return True
    readable, _, _ = select.select([driver.fileno()], [], [], 0)
    return bool(readable)


def _untouched(connection: Connection) -> bool:
    """Whether the connection's execution options are still the engine's. Options set on it
    (a revision's schema_translate_map or isolation_level) last as long as the Connection does,
    past DISCARD ALL: such a connection is closed, and the next tenant gets a fresh one."""
    return connection.get_execution_options() == connection.engine.get_execution_options()


class PostgresSessions(PostgresConnections):
    """Tenants' transactions (see Backend.transaction), and the connection they may share."""

    _reusing = False  # inside reusing_connection()
    _kept: Connection | None = None  # the idle connection the next tenant may take

    @contextmanager
    def reusing_connection(self) -> Iterator[None]:
        """Tenants' transactions inside this block run one after another on one connection,
        saving a connection (~6 ms) per tenant. Safe because everything tenant-scoped is
        transaction-scoped: the advisory lock is a transaction lock, search_path and timeouts
        are SET LOCAL, and between tenants commit() resets whatever else a revision may have
        left in the session. A connection whose transaction failed is closed, never reused
        (its state is unknown, the server may have dropped it), and so is one whose execution
        options a revision changed (they would outlive DISCARD ALL: _untouched)."""
        self._reusing = True
        try:
            yield
        finally:
            self._reusing = False
            kept, self._kept = self._kept, None
            if kept is not None:
                kept.close()

    @contextmanager
    def _tenant_transaction(self) -> Iterator[Connection]:
        """A transaction on the tenant connection, whose BEGIN and COMMIT docex-migrate sends
        itself (the driver autocommits, as SQLite's driver is taken over), so that each travels
        with other statements in one round trip: BEGIN with the tenant's lock (lock_tenant),
        COMMIT with the session's reset for the next tenant (commit)."""
        connection, self._kept = self._kept, None  # taken: a nested transaction opens its own
        if connection is not None and _ended_by_server(connection):
            connection.close()
            connection = None
        if connection is None:
            connection = self.connect()
            connection.connection.driver_connection.autocommit = True  # type: ignore[union-attr]
            _guard(connection)
        try:
            transaction = connection.begin()
            yield connection
            reuse = self._reusing and self._kept is None and _untouched(connection)
            reset = commit(connection, reset=reuse)
            transaction.commit()  # SQLAlchemy's bookkeeping: the driver is idle, nothing is sent
        except BaseException:
            connection.close()  # failed or interrupted: never reused
            raise
        if reuse and reset:
            self._kept = connection
        else:
            connection.close()

    @contextmanager
    def migration(self, tenant_id: str, *, create: bool, versioned: bool) -> Iterator[tuple[Connection, tuple[str, ...] | None]]:
        """As Backend.migration, with the version rows read by the lock's own statements. A
        versioned tenant's schema exists (``create`` has nothing to do); one dropped since the
        plan is TenantNotFoundError."""
        if not versioned:
            with super().migration(tenant_id, create=create, versioned=False) as started:
                yield started
            return
        schema = self.namespace(tenant_id)
        with self._tenant_transaction() as connection:
            _, heads = lock_tenant(connection, schema, self.timeouts, scope=True, versions=True)
            yield connection, heads

    @contextmanager
    def transaction(self, tenant_id: str, *, create: bool) -> Iterator[Connection]:
        schema = self.namespace(tenant_id)
        with self._tenant_transaction() as connection:
            exists, _ = lock_tenant(connection, schema, self.timeouts, scope=True)
            if create and not exists:
                self._create_schema(connection, schema)
            elif not exists:
                raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist (no schema {schema!r})")
            yield connection

    def _create_schema(self, connection: Connection, schema: str) -> None:
        try:
            connection.execute(CreateSchema(schema, if_not_exists=True))
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
                user, database = self.url.username or "the current user", self.url.database
                raise DatabaseUnavailableError(
                    f"user {user} may not create schemas in database {database!r} at {self.where()}: "
                    f"GRANT CREATE ON DATABASE {database} TO {user}"
                ) from None
            raise

    def identity(self, tenant_id: str, connection: Connection) -> str | None:
        """The schema's oid: a schema dropped and created again gets a new one (oids wrap
        around only after 2**32 objects). lock_tenant read it already; a schema created since
        in this transaction costs a query."""
        schema = self.namespace(tenant_id)
        locked, oid = connection.info.get(_LOCKED_SCHEMA, (None, None))
        if locked != schema or oid is None:
            oid = connection.execute(sa.select(pg_namespace.c.oid).where(pg_namespace.c.nspname == schema)).scalar()
        return None if oid is None else str(oid)

    def review_script(self, tenant_id: str, revision: str | None, body: str, *, versioned: bool, path: Path) -> str:
        schema = self.namespace(tenant_id)  # letters, digits, '_' and '-' only: safe in literals
        quoted = '"' + schema + '"'
        t = self.timeouts
        stale = f"RAISE EXCEPTION 'tenant {tenant_id} is no longer at {revision or 'base'}: render the script again'"
        if versioned:  # an empty table (at base) aggregates to NULL
            expected = f"'{revision}'" if revision else "NULL"
            check = f"IF (SELECT string_agg(version_num, ',') FROM {quoted}.{VERSION_TABLE}) IS DISTINCT FROM {expected} THEN"
        else:
            check = f"IF to_regclass('{quoted}.{VERSION_TABLE}') IS NOT NULL THEN"
        return "\n".join([
            f"-- docex-migrate upgrade --sql: tenant {tenant_id}, schema {schema}, from {revision or 'base'}",
            f"-- Run it with psql (the script makes it stop at the first error): psql -X -d DATABASE_URL -f {shlex.quote(str(path))}",
            "\\set ON_ERROR_STOP on",
            # A ~/.psqlrc (or -v) may have changed these: one transaction of its own, no savepoints.
            "\\set AUTOCOMMIT on",
            "\\set ON_ERROR_ROLLBACK off",
            # ... or how the server reads the script's text (its encoding, standard_conforming_strings,
            # ...): start from the settings the tool's own connection starts with (the server's, the
            # role's, PGOPTIONS), reading the file as the UTF-8 it is.
            "RESET ALL;",
            "\\encoding UTF8",
            "BEGIN;",
            f"SET LOCAL lock_timeout = '{ms(t.tenant_lock_wait)}';",
            f"DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtextextended('{schema}', 0)); END $$;",  # prints nothing
            f"SET LOCAL lock_timeout = '{ms(t.lock_timeout)}';",
            f"SET LOCAL statement_timeout = '{ms(t.statement_timeout)}';",
            f"DO $$ BEGIN {check} {stale}; END IF; END $$;",
            f"SET LOCAL search_path = {quoted};",
            body.strip(),
            "COMMIT;",
            "",
        ])  # fmt: skip

    def combined_script(self, scripts: list[str]) -> str | None:
        return "\n".join(scripts)  # each sets ON_ERROR_STOP: psql stops at the first tenant that fails

    def dispose(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            kept.close()
        super().dispose()

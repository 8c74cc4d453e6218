"""PostgreSQL: one schema per tenant, at DocEX's ``schema_template``, in one database."""

from __future__ import annotations

import logging
import math
import os
import re
import select
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.conninfo import make_conninfo
from psycopg.pq import Conninfo, TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema, DropSchema

from .. import tenants
from ..chain import VERSION_TABLE, Chain
from ..config import Timeouts
from ..errors import DatabaseUnavailableError, DeprovisionRefusedError, TenantNotFoundError, UnsupportedStepError
from ..runner import Recorded, migrate_tenant, record_chain
from .base import (
    ENDING_REFUSED,
    MISSING,
    Backend,
    CatalogRead,
    LedgerPlace,
    NamespaceState,
    backup_failed,
    discard_backup,
    new_backup_file,
    unreadable,
)
from .catalog import snapshot

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "dxcheck_"  # scratch schemas: dxcheck_<8 hex>_<tenant>, one set per scratch_template
# A committed set's marker: the schema dxcheck$<8 hex>, a name no tenant's schema can have ('$' is
# not allowed in schema templates). Only a set with a marker is ever swept, so a tenant whose
# schema merely looks like a scratch schema (template dx{tenant_id}, tenant check_0123abcd_x) is safe.
SCRATCH_MARKER = "dxcheck$"
INSUFFICIENT_PRIVILEGE = "42501"
LOCK_NOT_AVAILABLE = "55P03"
DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"
# Namespaces read per round trip. Reading a version table takes a lock on it (and its index)
# until the transaction ends, from a pool shared by the whole server (max_locks_per_transaction
# x max_connections, 6,400 by default): so batches stay small and each is its own transaction.
BATCH_SIZE = 500
_SCRATCH_SET = re.compile(SCRATCH_PREFIX + r"[0-9a-f]{8}_")


def _marker(prefix: str) -> str:
    return SCRATCH_MARKER + prefix[len(SCRATCH_PREFIX) : -1]


_FREE_CONNECTIONS = sa.text("""
    SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
             - (SELECT count(*) FROM pg_stat_activity),
           CASE WHEN r.rolsuper OR r.rolconnlimit < 0 THEN NULL
                ELSE r.rolconnlimit - (SELECT count(*) FROM pg_stat_activity WHERE usename = r.rolname) END,
           CASE WHEN r.rolsuper OR d.datconnlimit < 0 THEN NULL
                ELSE d.datconnlimit - (SELECT count(*) FROM pg_stat_activity WHERE datname = d.datname) END
    FROM pg_roles r, pg_database d
    WHERE r.rolname = session_user AND d.datname = current_database()
""")
_pg_namespace = sa.table("pg_namespace", sa.column("oid"), sa.column("nspname"), schema="pg_catalog")


# Each schema's tables, and why its version table cannot be read, if it cannot: the catalog is
# readable by every role, the tables themselves may not be.
_CATALOG = sa.text("""
SELECT n.nspname, n.oid, c.relname,
       CASE WHEN NOT has_schema_privilege(n.oid, 'USAGE') THEN 'usage'
            WHEN c.relname IS DISTINCT FROM :version_table THEN NULL
            WHEN NOT has_table_privilege(c.oid, 'SELECT') THEN 'select'
            WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid
                             AND a.attname = 'version_num' AND NOT a.attisdropped) THEN 'shape'
       END
FROM pg_catalog.pg_namespace n
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
WHERE n.nspname = ANY(:schemas)
""")
_UNREADABLE = {
    "usage": 'permission denied for schema {schema}: GRANT USAGE ON SCHEMA "{schema}" TO {user}',
    "select": f'permission denied for {{schema}}.{VERSION_TABLE}: GRANT SELECT ON "{{schema}}".{VERSION_TABLE} TO {{user}}',
    "shape": f"{{schema}}.{VERSION_TABLE} has no version_num column: it is not Alembic's version table; fix or rename it",
}


# Who holds the ledger's tables in a mode that blocks its reads or writes (what a ledger
# statement waits for), asked once its wait has run out.
_LEDGER_LOCKS = sa.text("""
SELECT l.relation::regclass::text, l.mode, a.pid, a.usename, a.application_name, a.state,
       date_trunc('second', now() - coalesce(a.xact_start, a.backend_start))
FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_backend_pid() AND l.locktype = 'relation'
  AND l.mode NOT IN ('AccessShareLock', 'RowShareLock', 'RowExclusiveLock')
  AND l.relation IN (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = :schema)
ORDER BY 1, 3
""")


_DATABASE_OID = sa.text("SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()")


def _holder(table: str, mode: str, pid: int, user: str | None, application: str | None, state: str | None, held: Any) -> str:
    return f"table {table} is held in {mode} by pid {pid} (user {user}, application {application!r}, {state} for {held})"


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def driver_dump(connection: Connection, schema: str) -> str:
    """A plain SQL dump of one schema (tables and rows) for when pg_dump is not installed."""
    reflected = sa.MetaData(schema=schema)
    reflected.reflect(bind=connection)
    dialect = connection.dialect
    lines = [
        f"-- docex-migrate backup of schema {schema} (written through the driver)",
        str(CreateSchema(schema, if_not_exists=True).compile(dialect=dialect)) + ";",
    ]
    for table in reflected.sorted_tables:
        lines.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip() + ";")
        for index in table.indexes:
            lines.append(str(sa.schema.CreateIndex(index).compile(dialect=dialect)) + ";")
        # Rows travel as JSON (row_to_json / json_populate_record), so every column type
        # round-trips without a literal renderer of its own.
        qualified = f"{dialect.identifier_preparer.format_table(table)}"
        rows = connection.execute(
            sa.select(sa.func.row_to_json(sa.literal_column("t")).cast(sa.Text)).select_from(table.alias("t"))
        ).scalars()
        for row in rows:
            literal = sa.literal(row, sa.Text).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            lines.append(f"INSERT INTO {qualified} SELECT * FROM json_populate_record(NULL::{qualified}, {literal});")
    return "\n".join(lines) + "\n"


def schema_pattern(schema: str) -> str:
    """pg_dump's --schema takes a pattern, case-folded and with * ? as wildcards unless double
    quoted: quoted, it names exactly this schema (never 'tenant_t001' for 'Tenant_t001')."""
    return '"' + schema.replace('"', '""') + '"'


def _qualified(connection: Connection, schema: str, name: str) -> str:
    quote = connection.dialect.identifier_preparer.quote_identifier
    return f"{quote(schema)}.{quote(name)}"


# What deprovision backs up and drops, by pg_class.relkind (and 'e' for enum types): the keyword
# of its DROP statement, which is also the word after CREATE in a dump. DROP order follows
# dependencies inside a tenant (views on tables, tables on types); anything of another kind
# makes the final DROP SCHEMA ... RESTRICT fail, so it is never dropped unseen.
_KEYWORDS = {
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "r": "TABLE",
    "p": "TABLE",
    "f": "FOREIGN TABLE",
    "S": "SEQUENCE",
    "c": "TYPE",
    "e": "TYPE",
}
_DROP_ORDER = ("VIEW", "MATERIALIZED VIEW", "TABLE", "FOREIGN TABLE", "SEQUENCE", "TYPE")


def schema_contents(connection: Connection, schema: str) -> dict[str, str]:
    """name -> kind (see _KEYWORDS) of what the schema holds; indexes and the like go with their table."""
    rows = connection.execute(
        sa.text(
            "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')"
            "   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"
            "   AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))"  # serial/identity: part of its table
            " UNION ALL SELECT t.typname, 'e' FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
            " WHERE n.nspname = :schema AND t.typtype = 'e'"
        ),
        {"schema": schema},
    )
    return {name: kind for name, kind in rows}


# Objects outside the schema that depend on something inside it: DROP SCHEMA ... CASCADE would
# silently drop them (a view reading two tenants, another schema's foreign key). Internal
# dependencies (a table's TOAST table, its row type) are part of their owner and skipped.
_FOREIGN_DEPENDENTS = sa.text("""
WITH nsp AS (SELECT oid FROM pg_namespace WHERE nspname = :schema),
inside AS (
    SELECT 'pg_class'::regclass AS classid, c.oid AS objid FROM pg_class c JOIN nsp ON c.relnamespace = nsp.oid
    UNION ALL SELECT 'pg_type'::regclass, t.oid FROM pg_type t JOIN nsp ON t.typnamespace = nsp.oid
    UNION ALL SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p JOIN nsp ON p.pronamespace = nsp.oid
    UNION ALL SELECT 'pg_constraint'::regclass, k.oid FROM pg_constraint k JOIN nsp ON k.connamespace = nsp.oid
),
dependents AS (  -- a view's dependency is its rewrite rule: name the view instead
    SELECT DISTINCT
        CASE WHEN d.classid = 'pg_rewrite'::regclass THEN 'pg_class'::regclass ELSE d.classid END AS classid,
        CASE WHEN d.classid = 'pg_rewrite'::regclass
             THEN (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = d.objid) ELSE d.objid END AS objid
    FROM pg_depend d JOIN inside i ON (d.refclassid, d.refobjid) = (i.classid, i.objid)
    WHERE d.deptype NOT IN ('i', 'e', 'x')
),
placed AS (
    SELECT x.classid, x.objid, COALESCE(
        CASE x.classid
            WHEN 'pg_attrdef'::regclass THEN (SELECT c.relnamespace FROM pg_attrdef a JOIN pg_class c ON c.oid = a.adrelid WHERE a.oid = x.objid)
            WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.oid = x.objid)
            WHEN 'pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE p.oid = x.objid)
        END,
        to_regnamespace((pg_identify_object(x.classid, x.objid, 0)).schema)::oid
    ) AS namespace
    FROM dependents x
)
SELECT pg_describe_object(p.classid, p.objid, 0) FROM placed p
WHERE p.namespace IS DISTINCT FROM (SELECT oid FROM nsp)
ORDER BY 1
""")


# The schema's columns of type oid, or of a domain over it (the lo extension's lo): where an
# application keeps the oids of its large objects.
_LARGE_OBJECT_COLUMNS = sa.text("""
SELECT c.relname || '.' || a.attname FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  AND 'pg_catalog.oid'::regtype IN (t.oid, t.typbasetype)
ORDER BY 1
""")


def foreign_dependents(connection: Connection, schema: str) -> list[str]:
    """Descriptions ('view reports.all_baskets') of what outside ``schema`` depends on it."""
    return list(connection.execute(_FOREIGN_DEPENDENTS, {"schema": schema}).scalars())


def _refuse_foreign_dependents(connection: Connection, tenant_id: str, schema: str) -> None:
    found = foreign_dependents(connection, schema)
    if found:
        raise DeprovisionRefusedError(
            f"tenant {tenant_id!r}: {len(found)} object(s) outside schema {schema!r} depend on it and would be "
            f"dropped with it: {'; '.join(found)}; drop or change them first (nothing dropped)"
        )


def _drop_exactly(connection: Connection, tenant_id: str, schema: str, contents: dict[str, str]) -> None:
    """Drop what ``contents`` lists, then the schema, all RESTRICT: anything else in the schema
    or depending on it from outside makes PostgreSQL refuse, and the transaction rolls back."""
    by_keyword: dict[str, list[str]] = {}
    for name, kind in contents.items():
        by_keyword.setdefault(_KEYWORDS[kind], []).append(_qualified(connection, schema, name))
    quote = connection.dialect.identifier_preparer.quote_identifier
    statements = [f"DROP {kw} {', '.join(by_keyword[kw])} RESTRICT" for kw in _DROP_ORDER if kw in by_keyword]
    statements.append(f"DROP SCHEMA {quote(schema)} RESTRICT")
    try:
        for statement in statements:
            connection.exec_driver_sql(statement)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != DEPENDENT_OBJECTS_STILL_EXIST:
            raise
        diag = exc.orig.diag  # type: ignore[union-attr]  # psycopg's error, as the sqlstate says
        detail = " ".join(f"{diag.message_primary or ''} {diag.message_detail or ''}".split())
        raise DeprovisionRefusedError(f"tenant {tenant_id!r}: {detail[:500]}; nothing dropped") from None


_IDENT = r'(?:"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE_SCHEMA = re.compile(rf"CREATE SCHEMA (?:IF NOT EXISTS )?({_IDENT})")
_CREATE = re.compile(
    rf"CREATE (?:UNLOGGED )?(TABLE|VIEW|MATERIALIZED VIEW|FOREIGN TABLE|SEQUENCE|TYPE) (?:IF NOT EXISTS )?({_IDENT})\.({_IDENT})"
)
_COPY = re.compile(rf"COPY ({_IDENT})\.({_IDENT}) .*FROM stdin;$")  # pg_dump: one line per row, up to \.
_INSERT = re.compile(rf"INSERT INTO ({_IDENT})\.({_IDENT}) ")  # driver_dump: one line per row


def _name(identifier: str) -> str:
    """The name an SQL identifier stands for: quoted exactly, unquoted folded to lower case."""
    return identifier[1:-1].replace('""', '"') if identifier.startswith('"') else identifier.lower()


def read_dump(path: Path, schema: str) -> tuple[bool, set[tuple[str, str]], Counter[str]]:
    """What a plain SQL dump (pg_dump's or driver_dump's) holds of ``schema``: whether it creates
    the schema, the (keyword, name) of each object it creates there, and rows per table."""
    creates_schema, objects, rows = False, set[tuple[str, str]](), Counter[str]()
    copying = None  # inside a COPY block: the table its rows are counted for ('' if not this schema's)
    with path.open(encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            line = line.rstrip("\n")
            if copying is not None:
                if line == "\\.":
                    copying = None
                else:
                    rows[copying] += 1
            elif match := _CREATE_SCHEMA.match(line):
                creates_schema = creates_schema or _name(match[1]) == schema
            elif match := _CREATE.match(line):
                if _name(match[2]) == schema:
                    objects.add((match[1], _name(match[3])))
            elif match := _COPY.match(line) or _INSERT.match(line):
                in_schema = _name(match[1]) == schema
                table = _name(match[2]) if in_schema else None
                if line.startswith("COPY"):
                    copying = table or ""
                elif table:
                    rows[table] += 1
    rows.pop("", None)
    return creates_schema, objects, rows


def _verify_backup(connection: Connection, tenant_id: str, schema: str, contents: dict[str, str], backup: Path) -> None:
    """Refuse to drop unless the backup creates this very schema, every object in it, and every
    row of every table: the rows are counted now, while the application's writes are locked out."""
    creates_schema, objects, rows = read_dump(backup, schema)
    problems = [] if creates_schema else [f"no CREATE SCHEMA for {schema!r}"]
    problems += [
        f"no {_KEYWORDS[kind].lower()} {name}"
        for name, kind in sorted(contents.items())
        if (_KEYWORDS[kind], name) not in objects
    ]
    for name in sorted(n for n, kind in contents.items() if kind == "r"):
        counted = connection.execute(sa.select(sa.func.count()).select_from(sa.table(name, schema=schema))).scalar()
        if rows[name] != counted:
            problems.append(f"{rows[name]} of the {counted} rows of {name}")
    if problems:
        raise DeprovisionRefusedError(
            f"tenant {tenant_id!r}: the backup does not hold what would be dropped ({'; '.join(problems[:5])}); nothing dropped"
        )


def _set_key(prefix: str) -> sa.ColumnElement[Any]:
    return sa.func.hashtextextended(prefix, 0)


def _scratch_schemas(connection: Connection, prefix: str) -> list[str]:
    pattern = prefix.replace("_", "\\_") + "%"
    query = sa.select(_pg_namespace.c.nspname).where(_pg_namespace.c.nspname.like(pattern, escape="\\"))
    return list(connection.execute(query).scalars())


def sweep_scratch(connection: Connection) -> list[str]:
    """Drop the scratch sets (by their markers) that no live session holds; return the names."""
    markers = _scratch_schemas(connection, SCRATCH_MARKER)
    connection.commit()
    dropped: list[str] = []
    for marker in sorted(markers):
        prefix = SCRATCH_PREFIX + marker[len(SCRATCH_MARKER) :] + "_"
        if not _SCRATCH_SET.fullmatch(prefix):
            continue
        held_elsewhere = not connection.execute(sa.select(sa.func.pg_try_advisory_lock(_set_key(prefix)))).scalar()
        connection.commit()
        if held_elsewhere:
            continue  # its run is still going
        members = [*_scratch_schemas(connection, prefix), marker]
        try:
            for name in members:
                connection.execute(DropSchema(name, cascade=True, if_exists=True))
            connection.commit()
            dropped += members
        except DBAPIError as exc:  # e.g. another role's leftovers: not ours to drop
            connection.rollback()
            log.info("cannot remove scratch schemas %s*: %s", prefix, _first_line(exc))
        finally:
            connection.execute(sa.select(sa.func.pg_advisory_unlock(_set_key(prefix))))
            connection.commit()
    return dropped


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def scope_to(connection: Connection, schema: str) -> None:
    """Make ``schema`` the only schema unqualified names resolve to, for the current transaction.

    set_config(..., is_local => true) is SET LOCAL: it ends with the transaction, so it can never
    carry over to the next tenant even on a reused connection, and public is not searched.
    """
    quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
    connection.execute(sa.select(sa.func.set_config("search_path", quoted, True)))


def _ms(seconds: float) -> str:
    """Whole milliseconds, rounded up: 0 disables a limit in PostgreSQL, so a positive timeout
    must never become 0 (rounded to the microsecond first, so 1.1 s is 1100 ms, not 1101)."""
    if seconds <= 0:
        return "0"
    return f"{max(1, math.ceil(round(seconds * 1000, 3)))}ms"


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
# A statement of its own, so its snapshot is taken after the lock: it sees a schema that a run
# holding the lock created (or dropped) while this one waited.
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
    settings = {"schema": schema, "lock": _ms(timeouts.lock_timeout), "statement": _ms(timeouts.statement_timeout)}
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
        # server still runs them in order, each statement with its own snapshot. On the tenant
        # connection the driver autocommits and the BEGIN is ours (_tenant_transaction): the one
        # psycopg sends itself costs a round trip of its own in a pipeline.
        lock = {"wait": _ms(timeouts.tenant_lock_wait), "schema": schema}
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
# server's lexer reads it: each statement of a string (comments, quoted strings and
# dollar-quoted bodies skipped), by its first words. ROLLBACK TO SAVEPOINT is not an end; a
# COMMIT inside a function or DO block is refused by the server itself (our BEGIN is explicit).
_ENDING_WORDS = {"commit", "end", "abort", "rollback", "prepare"}
_SKIPPED = re.compile(
    r"""\s+|--[^\n]*|'(?:[^']|'')*'|"(?:[^"]|"")*"|(?<![\w$])[eE]'(?:[^'\\]|\\.|'')*'"""
    r"|\$(?P<tag>(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?)\$.*?\$(?P=tag)\$",  # $$ too: the tag may be empty
    re.DOTALL,
)
_WORD = re.compile(r"[A-Za-z_\x80-\uffff][\w$\x80-\uffff]*|\S")


def _statements(sql: str) -> Iterator[list[str]]:
    """The words (lower case) and symbols of each statement of ``sql``, as PostgreSQL's lexer
    splits them: whitespace, comments (nested /* */ too) and quoted text are skipped."""
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
        if skipped := _SKIPPED.match(sql, at):
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


def ends_transaction(sql: str) -> bool:
    """Whether a statement of ``sql`` is COMMIT, END, ABORT, ROLLBACK (not TO a savepoint) or
    PREPARE TRANSACTION, in any spelling PostgreSQL accepts."""
    for words in _statements(sql):
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
        if ends_transaction(statement) or driver.info.transaction_status == TransactionStatus.IDLE:
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


_HAS_TABLES = sa.text(
    "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = :schema AND c.relkind IN ('r', 'p'))"
)


def replay(connection: Connection, recording: list[Recorded]) -> None:
    """Send a recording of the chain on ``connection``, inside its transaction: each statement
    with exactly the parameters the driver received when it was recorded, all of them in one
    round trip (psycopg's pipeline mode) instead of one per statement. An error surfaces when
    the pipeline ends, and fails the tenant's transaction as any other error would."""
    driver: Any = connection.connection.driver_connection  # psycopg's Connection
    pipeline = driver.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()  # libpq 14+
    with pipeline, driver.cursor() as cursor:
        for statement, parameters in recording:
            cursor.execute(statement, parameters)


# pg_dump's header settings are session-level: its timeouts (0) would lift the tenant's own for
# the rest of its transaction, and the encoding is the driver's business. The rest become SET LOCAL.
_DROPPED_SETTINGS = {
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "transaction_timeout",
    "client_encoding",
}
_HEADER_SET = re.compile(r"SET (\w+) = (.+);")
_SESSION_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', '', false);"


@dataclass(frozen=True)
class HeadDump:
    """The head schema as pg_dump wrote it from a scratch schema the chain migrated: tables,
    rows, sequence values, functions, triggers, grants and comments. ``schema``, the scratch
    schema's name (unique and random, so it names nothing else), stands where the tenant's goes."""

    sql: str
    schema: str

    def for_schema(self, quoted: str) -> str:
        return self.sql.replace(self.schema, quoted)

    @classmethod
    def from_pg_dump(cls, dump: str, schema: str) -> HeadDump | None:
        """pg_dump's plain output for ``schema`` made into what runs inside a tenant's
        transaction: the header's settings local, psql's own lines and CREATE SCHEMA out (the
        tenant's schema exists by then). None when the header holds anything else.

        Only the header is rewritten. The body stays as pg_dump wrote it, comments included (a
        line starting with '--' may as well be inside a function body or a row's text), and so
        do the SETs between its entries (default_tablespace, default_table_access_method: the
        values the scratch schema was made with; a reused connection is reset after the tenant)."""
        header, entry, rest = dump.partition("\n--\n-- Name: ")
        prelude, removed = [], [f"\nCREATE SCHEMA {schema};\n"]
        for line in header.splitlines():
            if not line or line.startswith("--"):
                continue
            if line.startswith("\\restrict "):  # psql's guard against a malicious server (pg_dump 15.14+)
                removed.append(f"\n\\un{line[1:]}\n")
            elif line == _SESSION_SEARCH_PATH:
                prelude.append("SELECT pg_catalog.set_config('search_path', '', true);")
            elif (setting := _HEADER_SET.fullmatch(line)) is None:
                return None
            elif setting[1] not in _DROPPED_SETTINGS:
                prelude.append(f"SET LOCAL {setting[1]} = {setting[2]};")
        body = entry + rest
        if not entry or any(line not in body for line in removed):
            return None
        for line in removed:
            body = body.replace(line, "\n", 1)
        return cls("\n".join(prelude) + body.replace(f'"{schema}"', schema), schema)


def _comparable(dump: str, schema: str) -> list[str]:
    """A dump's lines with the schema's name taken out and psql's random restrict keys dropped."""
    return [line.replace(schema, "@") for line in dump.splitlines() if not line.startswith(("\\restrict ", "\\unrestrict "))]


class PostgresBackend(Backend):
    kind = "postgresql"

    def __init__(self, url: URL, schema_template: str, timeouts: Timeouts | None = None) -> None:
        tenants.validate_schema_template(schema_template)
        self.url = url
        self.template = schema_template
        self.timeouts = timeouts or Timeouts()
        # NullPool: a connection is never handed to anyone else. Within reusing_connection() the
        # tenants' transactions share one (see there); outside it each gets a fresh one.
        self._engine: Engine | None = None
        self._reusing = False
        self._kept: Connection | None = None  # the idle connection the next tenant may take

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            # No server-side prepared statements (psycopg prepares a query run 5 times): they
            # would outlive the transaction, and a PgBouncer in transaction mode sends the next
            # transaction to another server connection, where they do not exist.
            connect_args: dict[str, Any] = {"connect_timeout": 10, "prepare_threshold": None}
            if "application_name" not in self.url.query:  # names this process to a run waiting on its tenant lock
                connect_args["application_name"] = f"docex-migrate (pid {os.getpid()})"
            self._engine = sa.create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
        return self._engine

    def describe(self) -> str:
        return f"PostgreSQL {self.url.render_as_string(hide_password=True)} schemas {self.template}"

    def where(self) -> str:
        url = self.url
        return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"

    def connect(self) -> Connection:
        try:
            return self.engine.connect()
        except DBAPIError as exc:
            raise DatabaseUnavailableError(self._explain(exc)) from None

    def _explain(self, exc: DBAPIError) -> str:
        """One line for a connection failure: where, what, and the fix. Never the password."""
        reason = " ".join(str(exc.orig or exc).split())
        where, user, database = self.where(), self.url.username or "the current user", self.url.database
        no_database = (  # a URL without a database name connects to libpq's default, the user's name
            f"database {database!r} does not exist at {where}: create it (createdb {database}) or fix database.postgres.database"
            if database
            else f"the URL names no database and libpq's default does not exist at {where}: set database.postgres.database"
        )
        fixes = (
            # Before "role": this message names the role too, which exists.
            (
                "too many connections for role",
                f'too many connections for role "{user}" at {where} (its CONNECTION LIMIT): '
                f"lower --jobs, close its other sessions, or raise it: ALTER ROLE {user} CONNECTION LIMIT n",
            ),
            (
                "too many connections for database",
                f'too many connections for database "{database}" at {where} (its CONNECTION '
                f"LIMIT): lower --jobs, close other sessions, or raise it: ALTER DATABASE {database} CONNECTION LIMIT n",
            ),
            (
                "too many clients",
                f"too many connections to PostgreSQL at {where} (max_connections): lower --jobs, or close other sessions",
            ),
            (
                "remaining connection slots are reserved",
                f"too many connections to PostgreSQL at {where} (max_connections): lower --jobs, or close other sessions",
            ),
            ("Connection refused", f"nothing answers at {where}: start PostgreSQL, or fix database.postgres host and port"),
            ("resolve host", f"unknown host in {where}: fix database.postgres.host"),
            ("translate host name", f"unknown host in {where}: fix database.postgres.host"),
            ("timeout expired", f"no answer from {where}: check the host, port and firewall"),
            (
                "password authentication failed",
                f"PostgreSQL at {where} refused user {user}: check database.postgres user and password",
            ),
            ("role", f"PostgreSQL at {where} has no user {user}: check database.postgres.user, or create the role"),
            ("pg_hba.conf", f"PostgreSQL at {where} does not let user {user} in: add a pg_hba.conf entry"),
            ("does not exist", no_database),
        )
        for marker, message in fixes:
            if marker in reason:
                return f"cannot connect to PostgreSQL: {message}"
        return f"cannot connect to PostgreSQL at {where} as {user}: {reason[:200]}"

    def namespace(self, tenant_id: str) -> str:
        return tenants.schema_name(self.template, tenant_id)

    def connection_budget(self) -> int:
        """Free connection slots under each of three limits, the fewest: the server's
        (max_connections less the reserved ones), the role's and the database's CONNECTION LIMIT
        (-1: none; superusers are exempt), each less the sessions it already counts. Less one for
        whoever else needs to connect meanwhile (an operator's psql, the application)."""
        with self.connect() as connection:
            free = [n for n in connection.execute(_FREE_CONNECTIONS).one() if n is not None]
        return max(1, int(min(free)) - 1)

    def warnings_for(self, tenant_id: str) -> Iterator[str]:
        name = self.namespace(tenant_id)
        if not tenants.docex_postgres_runtime_accepts(name):
            yield (
                f"schema {name!r} has characters other than letters, digits and '_': DocEX's PostgreSQL "
                f"runtime (2.8.7+) refuses it; prefer a tenant id with '_' instead of '-'"
            )

    def discover(self) -> list[str]:
        query = sa.select(_pg_namespace.c.nspname).where(_pg_namespace.c.nspname.like(self.matcher.like_pattern(), escape="\\"))
        with self.connect() as connection:
            names = connection.execute(query).scalars().all()
        return sorted({t for t in map(self.tenant_of, names) if t})

    def read_states(self, tenant_ids: Iterable[str]) -> dict[str, NamespaceState]:
        by_schema = {self.namespace(t): t for t in tenant_ids}
        states = {t: MISSING for t in by_schema.values()}
        if not by_schema:
            return states
        with self.connect() as connection:
            for batch in _batches(list(by_schema), BATCH_SIZE):
                for schema, state in self._read_batch(connection, batch).items():
                    states[by_schema[schema]] = state
        return states

    def _read_batch(self, connection: Connection, batch: list[str]) -> dict[str, NamespaceState]:
        """The states of up to BATCH_SIZE schemas: one catalog query, one UNION ALL over the
        version tables that can be read. A schema whose version table cannot be read (no
        privilege, not Alembic's shape) is reported alone, never fails the batch."""
        contents: dict[str, set[str]] = {}
        problems: dict[str, str] = {}
        oids: dict[str, int] = {}
        for schema, oid, table, problem in connection.execute(_CATALOG, {"schemas": batch, "version_table": VERSION_TABLE}):
            contents.setdefault(schema, set()).update([table] if table else [])
            oids[schema] = oid
            if problem:
                problems[schema] = _UNREADABLE[problem].format(schema=schema, user=self.url.username or "the current user")
        readable = [s for s, names in contents.items() if VERSION_TABLE in names and s not in problems]
        try:
            revisions = self._read_versions(connection, readable)
        except DBAPIError:  # something the catalog did not foresee: read them one by one
            connection.rollback()
            revisions = {}
            for schema in readable:
                try:
                    revisions.update(self._read_versions(connection, [schema]))
                except DBAPIError as exc:
                    connection.rollback()
                    problems[schema] = f"cannot read {schema}.{VERSION_TABLE}: {_first_line(exc)}"
        connection.rollback()  # read-only: release this batch's locks now
        states = {}
        for schema, names in contents.items():
            if schema in problems:
                states[schema] = replace(unreadable(problems[schema]), identity=str(oids[schema]))
                continue
            states[schema] = NamespaceState(
                exists=True,
                versioned=VERSION_TABLE in names,
                revisions=tuple(revisions.get(schema, ())),
                table_count=len(names - {VERSION_TABLE}),
                identity=str(oids[schema]),
            )
        return states

    def read_catalogs(self, tenant_ids: Iterable[str]) -> dict[str, CatalogRead]:
        """States and catalog fingerprints (fingerprints.py), BATCH_SIZE schemas per round trip,
        each batch one read-only REPEATABLE READ transaction, so a tenant's version rows and its
        catalog are read as of one instant, and its locks are released at once."""
        from .fingerprints import PG_FINGERPRINTS, PG_PLANNER, PG_RELATIONS

        by_schema = {self.namespace(t): t for t in tenant_ids}
        reads = {t: CatalogRead(MISSING) for t in by_schema.values()}
        with self.connect() as connection:
            for batch in _batches(list(by_schema), BATCH_SIZE):
                connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                connection.execute(sa.select(sa.func.set_config("search_path", "pg_catalog", True)))
                try:
                    relations = connection.execute(PG_RELATIONS, {"schemas": batch}).scalars().all()
                    for name, value in PG_PLANNER.items():
                        connection.execute(sa.select(sa.func.set_config(name, value, True)))
                    fingerprints: dict[str, str] = {
                        schema: fingerprint
                        for schema, fingerprint in connection.execute(
                            PG_FINGERPRINTS, {"schemas": batch, "relations": relations, "version_table": VERSION_TABLE}
                        )
                    }
                    for name in PG_PLANNER:
                        connection.execute(sa.select(sa.func.set_config(name, "on", True)))
                except DBAPIError as exc:  # e.g. an object dropped mid-read: no fingerprints, compared one by one
                    log.info("catalog fingerprints unavailable for a batch: %s", _first_line(exc))
                    connection.rollback()
                    fingerprints = {}
                for schema, state in self._read_batch(connection, batch).items():
                    usable = state.exists and not state.error
                    reads[by_schema[schema]] = CatalogRead(state, fingerprints.get(schema) if usable else None)
        return reads

    @staticmethod
    def _read_versions(connection: Connection, schemas: list[str]) -> dict[str, list[str]]:
        revisions: dict[str, list[str]] = {s: [] for s in schemas}
        if not schemas:
            return revisions
        # One UNION ALL over the version tables, written out: built as 500 select() constructs
        # and compiled, it cost ~0.1 ms a tenant. Names are quoted; each schema's name is a
        # parameter (the row says which table it came from).
        quote = connection.dialect.identifier_preparer.quote_identifier
        union = " UNION ALL ".join(
            f"SELECT %(s{i})s::text, version_num FROM {quote(s)}.{VERSION_TABLE}" for i, s in enumerate(schemas)
        )
        for schema, revision in connection.exec_driver_sql(union, {f"s{i}": s for i, s in enumerate(schemas)}):
            revisions[schema].append(revision)
        return revisions

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

    def reflection_engine(self, tenant_id: str) -> Engine:
        schema = self.namespace(tenant_id)  # letters, digits, '_' and '-' only: safe in options
        return sa.create_engine(self.url, poolclass=NullPool, connect_args={"options": f"-csearch_path={schema}"})

    def deprovision(self, tenant_id: str, backup_dir: Path | None) -> Path | None:
        """Back up and drop the schema in one transaction, under the tenant's advisory lock and
        locks on its tables, so the backup is exactly what is dropped (see README, Guarantees)."""
        schema = self.namespace(tenant_id)
        backup, committed = None, False
        try:
            with self.connect() as connection:
                with connection.begin():
                    lock_tenant(connection, schema, self.timeouts)
                    self._require(tenant_id, schema, connection)
                    contents = schema_contents(connection, schema)
                    # EXCLUSIVE: the application's writes wait (and then find no table), while its
                    # reads and pg_dump's ACCESS SHARE locks from another session still go through.
                    self._lock(connection, tenant_id, schema, contents, "EXCLUSIVE")
                    _refuse_foreign_dependents(connection, tenant_id, schema)
                    if backup_dir is not None:
                        backup = new_backup_file(tenant_id, backup_dir, ".sql")
                        self._write_backup(connection, tenant_id, schema, backup)
                        _verify_backup(connection, tenant_id, schema, contents, backup)
                    # The dump is done: now nobody may even create a view or foreign key on the
                    # tables between the last check and the drop.
                    self._lock(connection, tenant_id, schema, contents, "ACCESS EXCLUSIVE")
                    if schema_contents(connection, schema) != contents:
                        raise DeprovisionRefusedError(
                            f"tenant {tenant_id!r}: schema {schema!r} changed while it was backed up; nothing dropped"
                        )
                    _refuse_foreign_dependents(connection, tenant_id, schema)
                    _drop_exactly(connection, tenant_id, schema, contents)
                committed = True
        except BaseException:
            if not committed:
                discard_backup(backup)
            raise
        return backup

    def kept_by_deprovision(self, tenant_id: str) -> list[str]:
        """Large objects belong to the whole database (pg_largeobject), not to a schema: those
        the tenant's oid (or lo) columns point to stay, and are not in its backup."""
        schema = self.namespace(tenant_id)
        with self.connect() as connection:
            columns = list(connection.execute(_LARGE_OBJECT_COLUMNS, {"schema": schema}).scalars())
        if not columns:
            return []
        return [
            f"{', '.join(columns)} of schema {schema!r} may hold large object oids: large objects belong to the whole "
            "database, so they are neither in the backup nor removed; lo_export and lo_unlink those that were the tenant's"
        ]

    def _lock(self, connection: Connection, tenant_id: str, schema: str, contents: dict[str, str], mode: str) -> None:
        """Lock the schema's tables, waiting at most lock_timeout for the application's transactions."""
        names = [_qualified(connection, schema, n) for n, kind in contents.items() if kind in ("r", "p")]
        if not names:
            return
        try:
            connection.exec_driver_sql(f"LOCK TABLE {', '.join(names)} IN {mode} MODE")
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            raise DeprovisionRefusedError(
                f"tenant {tenant_id!r} is in use: an open transaction holds its tables longer than lock_timeout "
                f"({self.timeouts.lock_timeout:g}s); nothing dropped, retry when the application is idle"
            ) from None

    def _write_backup(self, connection: Connection, tenant_id: str, schema: str, target: Path) -> None:
        """pg_dump on this transaction's snapshot when it is installed, else a dump written
        through this very connection: either way exactly the rows this transaction sees."""
        pg_dump = shutil.which("pg_dump")
        try:
            if pg_dump:
                snapshot = connection.execute(sa.select(sa.func.pg_export_snapshot())).scalar()
                if self._pg_dump(pg_dump, schema, str(snapshot), target):
                    return
            target.write_text(driver_dump(connection, schema), encoding="utf-8")
        except OSError as exc:
            raise backup_failed(tenant_id, exc) from None

    def _pg_dump(self, pg_dump: str, schema: str, snapshot: str, target: Path) -> bool:
        done = self._run_pg_dump(pg_dump, schema, "--snapshot", snapshot, "--file", str(target))
        if done.returncode != 0:  # e.g. pg_dump older than the server: fall back to the driver
            log.warning("pg_dump failed (%s); writing the backup through the driver", done.stderr.strip()[:200])
            target.unlink(missing_ok=True)
        return done.returncode == 0

    def _run_pg_dump(self, pg_dump: str, schema: str, *options: str) -> subprocess.CompletedProcess[str]:
        """pg_dump of exactly ``schema`` (never a case-folded or wildcard match), without owners,
        connecting as the driver does (see libpq_connection)."""
        conninfo, password = self.libpq_connection()
        env = {**os.environ, **({"PGPASSWORD": password} if password is not None else {})}  # never on the command line
        args = [pg_dump, "--no-owner", "--schema", schema_pattern(schema), "--strict-names", *options, "--dbname", conninfo]
        if self.timeouts.lock_timeout:  # its ACCESS SHARE locks could queue behind someone waiting on ours
            args += ["--lock-wait-timeout", _ms(self.timeouts.lock_timeout)]
        return subprocess.run(args, env=env, capture_output=True, encoding="utf-8")

    def libpq_connection(self) -> tuple[str, str | None]:
        """What the driver connects with, for libpq's tools: a conninfo string of every libpq
        parameter SQLAlchemy derives from the URL (host, port, database, user, and sslmode and
        every other query option), without the password, which comes second."""
        _, params = self.engine.dialect.create_connect_args(self.url)
        libpq = {d.keyword.decode() for d in Conninfo.get_defaults()}
        password = params.get("password")
        kept = {k: v for k, v in params.items() if k in libpq and k != "password"}
        return make_conninfo("", **kept), None if password is None else str(password)

    def _require(self, tenant_id: str, schema: str, connection: Connection | None = None) -> None:
        query = sa.select(sa.func.count()).select_from(_pg_namespace).where(_pg_namespace.c.nspname == schema)
        if connection is None:
            with self.connect() as own:
                found = own.execute(query).scalar()
        else:
            found = connection.execute(query).scalar()
        if not found:
            raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist (no schema {schema!r})")

    def with_template(self, template: str) -> PostgresBackend:
        return PostgresBackend(self.url, template, self.timeouts)

    @contextmanager
    def scratch_template(self, *, committed: bool = False) -> Iterator[str]:
        """Schemas ``dxcheck_<random>_<tenant>`` in this database, all dropped at the end. A
        committed set is held by a session advisory lock on its prefix, which the server drops
        when the holder dies however it dies: a lockable set is an abandoned one."""
        prefix = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:8]}_"
        holder = self._hold_scratch(prefix) if committed else None
        try:
            yield prefix + tenants.PLACEHOLDER
        finally:
            try:
                self._drop_scratch(prefix)
            finally:
                if holder is not None:
                    holder.close()  # ends the session: its advisory lock goes with it

    def _hold_scratch(self, prefix: str) -> Connection | None:
        """A session holding the set's advisory lock, after sweeping abandoned sets. None when
        the database cannot be reached: then nothing can be created either."""
        try:
            holder = self.connect()
        except DatabaseUnavailableError:
            return None
        try:
            dropped = sweep_scratch(holder)
            if dropped:
                log.info("removed %d scratch schema(s) left by killed runs", len(dropped))
            holder.execute(sa.select(sa.func.pg_advisory_lock(_set_key(prefix))))
            holder.execute(CreateSchema(_marker(prefix)))
            holder.commit()
        except Exception:
            holder.close()
            raise
        return holder

    def _drop_scratch(self, prefix: str) -> None:
        try:
            connection = self.connect()
        except DatabaseUnavailableError:  # could not connect: nothing was created either
            return
        with connection, connection.begin():
            for name in _scratch_schemas(connection, prefix):
                connection.execute(DropSchema(name, cascade=True))
            connection.execute(DropSchema(_marker(prefix), if_exists=True))  # the set's marker, if committed

    def fresh_template(self, chain: Chain) -> HeadDump | list[Recorded]:
        """The head schema dumped (see _head_dump); when that cannot be had, every statement
        the chain sends to an empty schema on its way to head, recorded on a scratch schema in
        a transaction that is rolled back."""
        pg_dump = shutil.which("pg_dump")
        dump = self._head_dump(pg_dump, chain) if pg_dump else "pg_dump is not installed"
        if isinstance(dump, HeadDump):
            return dump
        log.info("%s: fresh tenants replay the chain's recorded statements instead of the head schema", dump)
        with self.scratch_template() as template:
            scratch = self.with_template(template)
            try:
                return record_chain(scratch, "recording", chain, chain.head)
            finally:
                scratch.dispose()

    def _head_dump(self, pg_dump: str, chain: Chain) -> HeadDump | str:
        """A scratch schema migrated to head by the chain and committed, dumped by pg_dump
        (schema and rows, as INSERTs the driver can send), then proven: replayed into a second
        scratch schema, whose own dump must be the same. Else why not: pg_dump failed (e.g. it is
        older than the server), or the proof did."""
        with self.scratch_template(committed=True) as template:
            scratch = self.with_template(template)
            try:
                migrate_tenant(scratch, "head", chain.head, create=True, chain=chain)
                head, proof = scratch.namespace("head"), scratch.namespace("proof")
                options = ("--inserts", "--encoding", "UTF8")
                done = self._run_pg_dump(pg_dump, head, *options)
                if done.returncode != 0:
                    return f"pg_dump failed ({done.stderr.strip()[:200]})"
                dump = HeadDump.from_pg_dump(done.stdout, head)
                if dump is None:
                    return "pg_dump's output is not laid out as expected"
                try:
                    scratch.install_fresh("proof", dump, chain.head)
                except DBAPIError as exc:
                    return f"the head schema's dump does not replay ({_first_line(exc)})"
                again = self._run_pg_dump(pg_dump, proof, *options)
                if again.returncode != 0 or _comparable(again.stdout, proof) != _comparable(done.stdout, head):
                    return "the head schema's dump replays to another schema"
                return dump
            finally:
                scratch.dispose()

    def install_fresh(self, tenant_id: str, template: HeadDump | list[Recorded], target: str) -> str | None:
        """Replay the head dump (or the recording) in one transaction under the tenant's lock;
        nothing is done if the schema turns out not to be empty (any table, alembic_version
        included, means someone else got there)."""
        schema = self.namespace(tenant_id)
        with self.transaction(tenant_id, create=True) as connection:
            if connection.execute(_HAS_TABLES, {"schema": schema}).scalar():
                return None
            if isinstance(template, HeadDump):
                # Without parameters psycopg sends the whole string as one simple query: one round
                # trip, and no placeholder parsing ('%' in a function body stays as it is).
                driver: Any = connection.connection.driver_connection
                driver.execute(template.for_schema(connection.dialect.identifier_preparer.quote_identifier(schema)))
            else:
                replay(connection, template)
            return self.identity(tenant_id, connection)

    def review_script(self, tenant_id: str, revision: str | None, body: str, *, versioned: bool) -> str:
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
            f"-- Run it with psql (the script makes it stop at the first error): psql -X -d DATABASE_URL -f {tenant_id}.sql",
            "\\set ON_ERROR_STOP on",
            "BEGIN;",
            f"SET LOCAL lock_timeout = '{_ms(t.tenant_lock_wait)}';",
            f"DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtextextended('{schema}', 0)); END $$;",  # prints nothing
            f"SET LOCAL lock_timeout = '{_ms(t.lock_timeout)}';",
            f"SET LOCAL statement_timeout = '{_ms(t.statement_timeout)}';",
            f"DO $$ BEGIN {check} {stale}; END IF; END $$;",
            f"SET LOCAL search_path = {quoted};",
            body.strip(),
            "COMMIT;",
            "",
        ])  # fmt: skip

    def combined_script(self, scripts: list[str]) -> str | None:
        return "\n".join(scripts)  # each sets ON_ERROR_STOP: psql stops at the first tenant that fails

    def outside_snapshot(self) -> dict[str, Any]:
        with self.connect() as connection:
            return snapshot(connection, "public")

    def schema(self, tenant_id: str) -> str | None:
        return self.namespace(tenant_id)

    def identity(self, tenant_id: str, connection: Connection) -> str | None:
        """The schema's oid: a schema dropped and created again gets a new one (oids wrap
        around only after 2**32 objects). lock_tenant read it already; a schema created since
        in this transaction costs a query."""
        schema = self.namespace(tenant_id)
        locked, oid = connection.info.get(_LOCKED_SCHEMA, (None, None))
        if locked != schema or oid is None:
            oid = connection.execute(sa.select(_pg_namespace.c.oid).where(_pg_namespace.c.nspname == schema)).scalar()
        return None if oid is None else str(oid)

    def ledger(self) -> LedgerPlace:
        """The schema tenants.LEDGER_SCHEMA of the same database (reserved: never a tenant's).
        Its sessions autocommit each statement without waiting for the WAL flush: a row lost to a
        server crash is made good by reconciliation (runs.py), and each row costs one round trip,
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
                f" -clock_timeout={_ms(wait)} -cstatement_timeout={_ms(2 * wait)}"
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

    def dispose(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            kept.close()
        if self._engine is not None:
            self._engine.dispose()

"""What a chain does outside the tenant's namespace, seen where it happens (the database), not
in the revisions' source: the `no-schema-names` and `isolation` checks.

A scratch tenant is migrated up the chain one revision at a time and back down to base, in one
transaction that is rolled back (nothing is ever committed, so nothing stays behind), and after
each step the database is asked what this transaction did outside the tenant:

- PostgreSQL: every catalog row this transaction created or changed (its ``xmin`` is ours) for
  an object outside the tenant's schema and the system schemas: schemas, tables, views,
  sequences, indexes, functions, types, constraints, triggers, columns, comments, extensions
  (a schema the revision created is outside too); every object outside that disappeared (a
  drop); and every row written into a table outside (pg_stat_xact_user_tables, this
  transaction's own counts: an INSERT into ``docex_shared.audit``).
- SQLite: every part of a statement SQLite's authorizer is asked about that writes to a
  database other than the tenant's file (``main``): the ``temp`` database (which vanishes with
  the connection) or an attached file, and every ATTACH.

Limits: PostgreSQL objects changed inside a savepoint of the revision carry the savepoint's
transaction id and are not seen as changed (a drop or a created object still is, by name); a
drop inside a real tenant's schema is not seen (those schemas are left out of the listing by
name, which would read every tenant's catalog at every step; what a revision creates or changes
there is seen); cluster-wide objects (roles, databases) and nextval on a sequence outside are
not seen; a revision that commits through the driver itself ends the walk's transaction, and
what it did until then is committed. The other scratch sets of concurrent checks
(``dxcheck_*``) are left out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .backends import Backend, open_backend
from .backends.postgresql.connections import PostgresConnections
from .backends.sqlite.transactions import OBSERVER
from .chain import Chain
from .config import Settings
from .results import describe_error
from .runner import walk_chain
from .scratch import scratch_settings
from .selection import select

PROBE_TENANT = "outside"

# Which schemas are "outside": all but the tenant's, the system's, other sessions' temp schemas
# and the concurrent checks' scratch sets (dxcheck_*); :skip leaves out the real tenants too
# (for the name listing only: reading every tenant's catalog at every step would not scale).
_PG_NS = r"""
WITH ns AS (
    SELECT n.oid, n.nspname, n.xmin FROM pg_catalog.pg_namespace n
    WHERE n.nspname <> :schema AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'dxcheck%'
      AND (n.nspname NOT LIKE 'pg\_temp\_%' OR n.oid = pg_catalog.pg_my_temp_schema())
      AND NOT n.nspname = ANY(:skip)
), rel AS (
    SELECT c.oid, c.relkind, ns.nspname || '.' || c.relname AS name, c.xmin
    FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
), me AS (SELECT pg_catalog.pg_current_xact_id()::text::xid AS xid)
"""
_RELKIND = """CASE r.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
    WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'i' THEN 'index' WHEN 'I' THEN 'index'
    WHEN 'c' THEN 'type' WHEN 'f' THEN 'foreign table' ELSE 'relation' END"""
# Schemas, relations, functions, types and extensions outside, by name: (kind, name, ours), ours
# when this transaction created or last changed its catalog row.
_PG_NAMED = f"""
SELECT 'schema', ns.nspname, ns.xmin = me.xid FROM ns, me
UNION ALL
SELECT {_RELKIND}, r.name, r.xmin = me.xid FROM rel r, me WHERE r.relkind <> 't'
UNION ALL
SELECT 'function', ns.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
       p.xmin = me.xid
FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace, me
UNION ALL
SELECT 'type', ns.nspname || '.' || t.typname, t.xmin = me.xid
FROM pg_catalog.pg_type t JOIN ns ON ns.oid = t.typnamespace, me WHERE t.typrelid = 0 AND t.typelem = 0
UNION ALL
SELECT 'extension', e.extname, e.xmin = me.xid FROM pg_catalog.pg_extension e, me
"""
_PG_NAMES = sa.text(_PG_NS + _PG_NAMED)
# Every catalog row this transaction wrote outside the tenant (the real tenants' schemas
# included): the objects above, and the parts of a table (columns, constraints, triggers, comments).
_PG_OURS = sa.text(
    _PG_NS
    + "SELECT * FROM ("
    + _PG_NAMED
    + """
UNION ALL
SELECT 'column', r.name || '.' || a.attname, a.xmin = me.xid
FROM rel r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0, me
UNION ALL
SELECT 'constraint', coalesce(r.name, ns.nspname) || '.' || k.conname, k.xmin = me.xid
FROM pg_catalog.pg_constraint k JOIN ns ON ns.oid = k.connamespace LEFT JOIN rel r ON r.oid = k.conrelid, me
UNION ALL
SELECT 'trigger', r.name || '.' || g.tgname, g.xmin = me.xid FROM pg_catalog.pg_trigger g JOIN rel r ON r.oid = g.tgrelid, me
UNION ALL
SELECT 'comment', r.name || coalesce('.' || a.attname, ''), d.xmin = me.xid
FROM pg_catalog.pg_description d JOIN rel r ON d.classoid = 'pg_catalog.pg_class'::regclass AND d.objoid = r.oid
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum = d.objsubid AND d.objsubid > 0, me
) found(kind, name, ours) WHERE ours"""
)
_NAMED_KINDS = {
    "schema",
    "table",
    "view",
    "materialized view",
    "sequence",
    "index",
    "type",
    "foreign table",
    "relation",
    "function",
    "extension",
}

# Rows this transaction wrote into tables outside the tenant's schema, so far.
_PG_ROWS = sa.text(r"""
SELECT schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_catalog.pg_stat_xact_user_tables
WHERE schemaname <> :schema AND schemaname NOT LIKE 'dxcheck%' AND n_tup_ins + n_tup_upd + n_tup_del > 0
""")

# SQLite authorizer actions that write (sqlite3's constants), and what they do, for evidence.
_SQLITE_WRITES = {
    sqlite3.SQLITE_CREATE_INDEX: "created index",
    sqlite3.SQLITE_CREATE_TABLE: "created table",
    sqlite3.SQLITE_CREATE_TEMP_INDEX: "created temp index",
    sqlite3.SQLITE_CREATE_TEMP_TABLE: "created temp table",
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER: "created temp trigger",
    sqlite3.SQLITE_CREATE_TEMP_VIEW: "created temp view",
    sqlite3.SQLITE_CREATE_TRIGGER: "created trigger",
    sqlite3.SQLITE_CREATE_VIEW: "created view",
    sqlite3.SQLITE_DELETE: "deleted rows from",
    sqlite3.SQLITE_DROP_INDEX: "dropped index",
    sqlite3.SQLITE_DROP_TABLE: "dropped table",
    sqlite3.SQLITE_DROP_TEMP_INDEX: "dropped temp index",
    sqlite3.SQLITE_DROP_TEMP_TABLE: "dropped temp table",
    sqlite3.SQLITE_DROP_TEMP_TRIGGER: "dropped temp trigger",
    sqlite3.SQLITE_DROP_TEMP_VIEW: "dropped temp view",
    sqlite3.SQLITE_DROP_TRIGGER: "dropped trigger",
    sqlite3.SQLITE_DROP_VIEW: "dropped view",
    sqlite3.SQLITE_INSERT: "inserted rows into",
    sqlite3.SQLITE_UPDATE: "updated rows of",
}


@dataclass
class Probe:
    """What the chain did outside the tenant: one evidence line per object or table, naming the
    step; ``stopped``: why the walk ended early (a revision failed: the other checks say more)."""

    evidence: list[str] = field(default_factory=list)
    stopped: str | None = None
    steps: int = 0


Objects = set[tuple[str, str]]  # (kind, qualified name) of what lies outside every tenant


def objects_outside(settings: Settings) -> Objects | None:
    """Everything outside the tenants' scratch sets and the system schemas, as it is now
    (PostgreSQL; None on SQLite, where tenants share no database): the baseline the isolation
    check compares with after its fleet."""
    with open_backend(settings) as backend:
        if not isinstance(backend, PostgresConnections):
            return None
        with backend.connect() as connection:
            parameters = {"schema": "", "skip": list(_tenant_schemas(settings))}
            return {(kind, name) for kind, name, _ in connection.execute(_PG_NAMES, parameters)}


def _tenant_schemas(settings: Settings) -> list[str]:
    """The real tenants' schemas: left out of the listings by name (they are many, and what a
    revision creates or changes in one is still seen through the catalog rows it wrote)."""
    with open_backend(settings) as backend:
        return sorted(select(backend, None).values())


def compare_objects(before: Objects, after: Objects) -> list[str]:
    return [f"created {kind} {name}" for kind, name in sorted(after - before)] + [
        f"dropped {kind} {name}" for kind, name in sorted(before - after)
    ]


def _pg_watch(
    schema: str | None, skip: list[str], probe: Probe
) -> tuple[Callable[[Connection], None], Callable[[Connection, str], None]]:
    named: set[tuple[str, str]] = set()  # outside the real tenants, by name
    ours: set[tuple[str, str]] = set()  # every catalog row this transaction wrote outside
    rows: dict[str, tuple[int, int, int]] = {}
    parameters = {"schema": schema, "skip": skip}

    def read(connection: Connection) -> tuple[set[tuple[str, str]], set[tuple[str, str]], dict[str, tuple[int, int, int]]]:
        names = {(kind, name) for kind, name, _ in connection.execute(_PG_NAMES, parameters)}
        written = {(kind, name) for kind, name, _ in connection.execute(_PG_OURS, {"schema": schema, "skip": []})}
        counts = {name: (i, u, d) for name, i, u, d in connection.execute(_PG_ROWS, {"schema": schema})}
        return names, written, counts

    def start(connection: Connection) -> None:
        names, written, counts = read(connection)
        named.update(names)
        ours.update(written)
        rows.update(counts)

    def after(connection: Connection, step: str) -> None:
        names, written, counts = read(connection)
        for kind, name in sorted(written - ours):
            if kind in _NAMED_KINDS and (kind, name) not in named:
                probe.evidence.append(f"{step}: created {kind} {name}")
            else:
                probe.evidence.append(f"{step}: {'changed' if kind in _NAMED_KINDS else 'created or changed'} {kind} {name}")
        probe.evidence += [f"{step}: dropped {kind} {name}" for kind, name in sorted(named - names)]
        for name, now in sorted(counts.items()):
            if now != rows.get(name):
                was = rows.get(name, (0, 0, 0))
                done = [
                    f"{n - o} {what}" for n, o, what in zip(now, was, ("inserted", "updated", "deleted"), strict=True) if n != o
                ]
                probe.evidence.append(f"{step}: wrote rows into table {name} ({', '.join(done)})")
        named.clear()
        named.update(names)
        ours.update(written)
        rows.clear()
        rows.update(counts)

    return start, after


def refusing_attach(refused: list[str]) -> Callable[..., bool | None]:
    """A SQLite observer (transactions.OBSERVER) refusing every ATTACH, for the checks that
    commit on scratch files: what a revision would write into another file would stay there."""

    def observe(action: int, first: str | None, *_: Any) -> bool:
        if action == sqlite3.SQLITE_ATTACH:
            refused.append(f"attaches database file {first!r}: refused, nothing outside the tenant's file is written")
            return True
        return False

    return observe


def _sqlite_observer(found: list[str]) -> Callable[..., None]:
    def observe(action: int, first: str | None, second: str | None, database: str | None, trigger: str | None) -> None:
        if action == sqlite3.SQLITE_ATTACH:
            found.append(f"attached database file {first!r}")
        elif action == sqlite3.SQLITE_ALTER_TABLE and first not in (None, "main"):
            found.append(f"altered table {first}.{second}")
        elif action in _SQLITE_WRITES and database not in (None, "main") and not (first or "").startswith("sqlite_"):
            found.append(f"{_SQLITE_WRITES[action]} {database}.{first}")

    return observe


def probe_chain(settings: Settings, chain: Chain) -> Probe:
    """Walk a scratch tenant up the chain and back to base in one rolled-back transaction and
    say what each step did outside it (see the module docstring)."""
    order = chain.order
    steps: list[tuple[str | None, bool]] = [(r, False) for r in order]
    steps += [(order[i - 1] if i else None, True) for i in range(len(order) - 1, -1, -1)]
    names = [f"upgrade to {r}" for r in order] + [f"downgrade of {r}" for r in reversed(order)]
    probe = Probe()
    with scratch_settings(settings) as scratch, open_backend(scratch) as backend:
        walk = iter(names)
        if backend.kind == "postgresql":
            start, after = _pg_watch(backend.schema(PROBE_TENANT), list(_tenant_schemas(settings)), probe)
            _walk(backend, chain, steps, probe, start, lambda connection: after(connection, next(walk)))
        else:
            found: list[str] = []

            def take(connection: Connection) -> None:
                step = next(walk)
                probe.evidence += [f"{step}: {line}" for line in dict.fromkeys(found)]
                found.clear()

            token = OBSERVER.set(_sqlite_observer(found))
            try:
                _walk(backend, chain, steps, probe, lambda connection: None, take)
            finally:
                OBSERVER.reset(token)
                if found:  # the step that failed
                    step = next(walk, "a step")
                    probe.evidence += [f"{step}: {line}" for line in dict.fromkeys(found)]
    return probe


def _walk(
    backend: Backend,
    chain: Chain,
    steps: list[tuple[str | None, bool]],
    probe: Probe,
    start: Callable[[Connection], None],
    take: Callable[[Connection], None],
) -> None:
    def counted(connection: Connection, target: Any, downgrade: bool) -> None:
        probe.steps += 1
        take(connection)

    try:
        walk_chain(backend, PROBE_TENANT, chain, steps, counted, start)
    except Exception as exc:  # a revision that fails: stepwise and the others report it
        probe.stopped = describe_error(exc)

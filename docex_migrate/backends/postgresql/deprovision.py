"""PostgreSQL: deprovisioning a tenant. Its schema backed up (pg_dump on the transaction's own
exported snapshot, else backup.driver_dump), the backup proven to hold every object and row,
and exactly those objects dropped, RESTRICT, in one transaction under the tenant's lock and
locks on its tables; refused while objects outside the schema depend on it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ...errors import DeprovisionRefusedError, TenantNotFoundError
from ...interrupts import hold
from ..base import backup_failed, discard_backup, new_backup_file
from ..catalog_paths import owned, relations
from .backup import driver_dump, read_dump
from .connections import PostgresConnections, pg_namespace
from .sessions import lock_tenant

log = logging.getLogger(__name__)

LOCK_NOT_AVAILABLE = "55P03"
DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"


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


# name -> kind: the schema's relations (catalog_paths.py: through pg_depend, then by oid), less
# the sequences of serial and identity columns (part of their table), and its enum types.
_SCHEMA_CONTENTS = sa.text(f"""
WITH nsp AS (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = :schema)
SELECT c.relname, c.relkind::text FROM pg_catalog.pg_class c
WHERE c.oid IN ({relations("(SELECT oid FROM nsp)")}) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = c.oid AND d.objsubid = 0 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.deptype IN ('a', 'i'))
UNION ALL
SELECT t.typname, 'e' FROM pg_catalog.pg_type t WHERE t.oid IN ({owned("pg_type", "(SELECT oid FROM nsp)")}) AND t.typtype = 'e'
""")


def schema_contents(connection: Connection, schema: str) -> dict[str, str]:
    """name -> kind (see _KEYWORDS) of what the schema holds; indexes and the like go with their table."""
    return {name: kind for name, kind in connection.execute(_SCHEMA_CONTENTS, {"schema": schema})}


# Objects outside the schema that depend on something inside it: DROP SCHEMA ... CASCADE would
# silently drop them (a view reading two tenants, another schema's foreign key). Internal
# dependencies (a table's TOAST table, its row type) are part of their owner and skipped.
_FOREIGN_DEPENDENTS = sa.text(f"""
WITH nsp AS (SELECT oid FROM pg_namespace WHERE nspname = :schema),
rels AS ({relations("(SELECT oid FROM nsp)")}),
types AS (  -- those of the schema's own, their arrays, and its relations' row types and theirs
    SELECT t.oid, t.typarray FROM pg_type t WHERE t.oid IN ({owned("pg_type", "(SELECT oid FROM nsp)")})
    UNION ALL SELECT t.oid, t.typarray FROM pg_type t WHERE t.oid IN (SELECT c.reltype FROM pg_class c WHERE c.oid IN (SELECT objid FROM rels))
    UNION ALL SELECT t.oid, t.typarray FROM pg_type t
              WHERE t.oid IN (SELECT r.rngmultitypid FROM pg_range r WHERE r.rngtypid IN ({owned("pg_type", "(SELECT oid FROM nsp)")}))
),
inside AS (  -- by oid or through an index on what they belong to, never a scan of a whole catalog
    SELECT 'pg_class'::regclass AS classid, r.objid FROM rels r
    UNION ALL SELECT 'pg_class'::regclass, x.indexrelid FROM pg_index x WHERE x.indrelid IN (SELECT objid FROM rels)
    UNION ALL SELECT 'pg_type'::regclass, t.oid FROM types t
    UNION ALL SELECT 'pg_type'::regclass, t.typarray FROM types t WHERE t.typarray <> 0
    UNION ALL SELECT 'pg_proc'::regclass, p.objid FROM ({owned("pg_proc", "(SELECT oid FROM nsp)")}) p
    UNION ALL SELECT 'pg_constraint'::regclass, k.oid FROM rels r
              CROSS JOIN LATERAL (SELECT k.oid FROM pg_constraint k WHERE k.conrelid = r.objid OFFSET 0) k
    UNION ALL SELECT 'pg_constraint'::regclass, k.oid FROM types t
              CROSS JOIN LATERAL (SELECT k.oid FROM pg_constraint k WHERE k.contypid = t.oid OFFSET 0) k
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
            WHEN 'pg_attrdef'::regclass THEN (SELECT c.relnamespace FROM pg_class c
                                              WHERE c.oid = (SELECT a.adrelid FROM pg_attrdef a WHERE a.oid = x.objid))
            WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_class c
                                              WHERE c.oid = (SELECT t.tgrelid FROM pg_trigger t WHERE t.oid = x.objid))
            WHEN 'pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_class c
                                             WHERE c.oid = (SELECT p.polrelid FROM pg_policy p WHERE p.oid = x.objid))
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
_LARGE_OBJECT_COLUMNS = sa.text(f"""
SELECT c.relname || '.' || a.attname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE c.oid IN ({owned("pg_class", "(SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = :schema)")})
  AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
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


class PostgresDeprovision(PostgresConnections):
    """Backend.deprovision and kept_by_deprovision."""

    def deprovision(self, tenant_id: str, backup_dir: Path | None) -> Path | None:
        """Back up and drop the schema in one transaction, under the tenant's advisory lock and
        locks on its tables, so the backup is exactly what is dropped (see docs/internals.md, Guarantees)."""
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
                    hold()  # it commits now: a signal from here on no longer stops it (interrupts.py)
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
        """pg_dump reading as of this transaction (``as_of``: PostgreSQL's exported transaction
        snapshot) when it is installed, else a dump written through this very connection: either
        way exactly the rows this transaction sees."""
        pg_dump = shutil.which("pg_dump")
        try:
            if pg_dump:
                as_of = connection.execute(sa.select(sa.func.pg_export_snapshot())).scalar()
                if self._pg_dump(pg_dump, schema, str(as_of), target):
                    return
            target.write_text(driver_dump(connection, schema), encoding="utf-8")  # over pg_dump's, keeping 0600
        except OSError as exc:
            raise backup_failed(tenant_id, exc, target.parent) from None

    def _pg_dump(self, pg_dump: str, schema: str, as_of: str, target: Path) -> bool:
        done = self._run_pg_dump(pg_dump, schema, "--snapshot", as_of, "--file", str(target))
        if done.returncode != 0:  # e.g. pg_dump older than the server: fall back to the driver
            log.warning("pg_dump failed (%s); writing the backup through the driver", done.stderr.strip()[:200])
        return done.returncode == 0

    def _require(self, tenant_id: str, schema: str, connection: Connection | None = None) -> None:
        query = sa.select(sa.func.count()).select_from(pg_namespace).where(pg_namespace.c.nspname == schema)
        if connection is None:
            with self.connect() as own:
                found = own.execute(query).scalar()
        else:
            found = connection.execute(query).scalar()
        if not found:
            raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist (no schema {schema!r})")

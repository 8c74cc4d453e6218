"""PostgreSQL: reading many tenants' schemas at once, read-only: discovery, states (version rows
and tables, BATCH_SIZE schemas per round trip), catalog fingerprints (../fingerprints.py) and
the catalog snapshot of what lies outside every tenant."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ...chain import VERSION_TABLE
from ...errors import DocexMigrateError
from ..base import MISSING, CatalogRead, NamespaceState, unreadable
from ..catalog import snapshot
from ..catalog_paths import owned
from ..fingerprints import PG_FINGERPRINTS, PG_PLANNER, PG_RELATIONS
from .connections import PostgresConnections, first_line, pg_namespace

log = logging.getLogger(__name__)


# Namespaces read per round trip. Reading a version table takes a lock on it (and its index)
# until the transaction ends, from a pool shared by the whole server (max_locks_per_transaction
# x max_connections, 6,400 by default): so batches stay small and each is its own transaction.
BATCH_SIZE = 500

# Each schema's oid, whether it has a version table (by name: pg_class_relname_nsp_index), how
# many tables one without it has (its relations through pg_depend, catalog_paths.py, each by oid;
# 0 for a versioned schema, whose count no caller reads: it would cost more than the rest), and why
# its version table cannot be read, if it cannot: the catalog is readable by every role, the
# tables themselves may not be. Scalar subqueries, so that each is an index lookup per schema
# whatever the planner estimates for a batch.
_CATALOG = sa.text(f"""
SELECT n.nspname, n.oid, n.version_table IS NOT NULL,
       CASE WHEN n.version_table IS NULL THEN  -- counted where it is read: an unversioned schema's
           (SELECT count(*) FROM pg_catalog.pg_class c
            WHERE c.oid IN ({owned("pg_class", "n.oid")}) AND c.relkind IN ('r', 'p'))
       ELSE 0 END,
       CASE WHEN NOT pg_catalog.has_schema_privilege(n.oid, 'USAGE') THEN 'usage'
            WHEN n.version_table IS NULL THEN NULL
            WHEN NOT pg_catalog.has_table_privilege(n.version_table, 'SELECT') THEN 'select'
            WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = n.version_table
                             AND a.attname = 'version_num' AND NOT a.attisdropped) THEN 'shape'
       END
FROM (SELECT n.nspname, n.oid,
             (SELECT v.oid FROM pg_catalog.pg_class v
              WHERE v.relname = :version_table AND v.relnamespace = n.oid AND v.relkind IN ('r', 'p')) AS version_table
      FROM (SELECT s.name AS nspname, (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = s.name) AS oid
            FROM unnest(CAST(:schemas AS name[])) s(name) OFFSET 0) n
      WHERE n.oid IS NOT NULL
      OFFSET 0) n  -- each read once per schema, not once per use
""")
_UNREADABLE = {
    "usage": 'permission denied for schema {schema}: GRANT USAGE ON SCHEMA "{schema}" TO {user}',
    "select": f'permission denied for {{schema}}.{VERSION_TABLE}: GRANT SELECT ON "{{schema}}".{VERSION_TABLE} TO {{user}}',
    "shape": f"{{schema}}.{VERSION_TABLE} has no version_num column: it is not Alembic's version table; fix or rename it",
}


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class PostgresCatalogReads(PostgresConnections):
    """Backend.discover, read_states, read_catalogs and outside_snapshot."""

    def discover(self) -> list[str]:
        query = sa.select(pg_namespace.c.nspname).where(pg_namespace.c.nspname.like(self.matcher.like_pattern(), escape="\\"))
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
        versioned: dict[str, bool] = {}
        table_counts: dict[str, int] = {}
        problems: dict[str, str] = {}
        oids: dict[str, int] = {}
        for schema, oid, has_version_table, tables, problem in connection.execute(
            _CATALOG, {"schemas": batch, "version_table": VERSION_TABLE}
        ):
            versioned[schema], table_counts[schema], oids[schema] = has_version_table, tables, oid
            if problem:
                problems[schema] = _UNREADABLE[problem].format(schema=schema, user=self.url.username or "the current user")
        readable = [s for s, has_version_table in versioned.items() if has_version_table and s not in problems]
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
                    problems[schema] = f"cannot read {schema}.{VERSION_TABLE}: {first_line(exc)}"
        connection.rollback()  # read-only: release this batch's locks now
        states = {}
        for schema, has_version_table in versioned.items():
            if schema in problems:
                states[schema] = replace(unreadable(problems[schema]), identity=str(oids[schema]))
                continue
            states[schema] = NamespaceState(
                exists=True,
                versioned=has_version_table,
                revisions=tuple(revisions.get(schema, ())),
                table_count=table_counts[schema],
                identity=str(oids[schema]),
            )
        return states

    def version_rows(self, tenant_id: str) -> tuple[str, ...] | None:
        """One SELECT from the tenant's alembic_version (the server finds the table by name,
        through its caches and pg_class_relname_nsp_index): no catalog query, no lock of ours."""
        quote = self.engine.dialect.identifier_preparer.quote_identifier
        try:
            with self.connect() as connection:
                rows = connection.exec_driver_sql(f"SELECT version_num FROM {quote(self.namespace(tenant_id))}.{VERSION_TABLE}")
                return tuple(rows.scalars())
        except (DBAPIError, DocexMigrateError) as exc:  # missing, no privilege, no server: the full path says which
            log.debug("version rows of tenant %r not read directly: %s", tenant_id, exc)
            return None

    def read_catalogs(self, tenant_ids: Iterable[str]) -> dict[str, CatalogRead]:
        """States and catalog fingerprints (fingerprints.py), BATCH_SIZE schemas per round trip,
        each batch one read-only REPEATABLE READ transaction, so a tenant's version rows and its
        catalog are read as of one instant, and its locks are released at once."""
        by_schema = {self.namespace(t): t for t in tenant_ids}
        reads = {t: CatalogRead(MISSING) for t in by_schema.values()}
        with self.connect() as connection:
            for batch in _batches(list(by_schema), BATCH_SIZE):
                connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                connection.execute(sa.select(sa.func.set_config("search_path", "pg_catalog", True)))
                try:
                    for name, value in PG_PLANNER.items():
                        connection.execute(sa.select(sa.func.set_config(name, value, True)))
                    relations = connection.execute(PG_RELATIONS, {"schemas": batch}).scalars().all()
                    fingerprints: dict[str, str] = {
                        schema: fingerprint
                        for schema, fingerprint in connection.execute(
                            PG_FINGERPRINTS, {"schemas": batch, "relations": relations, "version_table": VERSION_TABLE}
                        )
                    }
                    for name in PG_PLANNER:
                        connection.execute(sa.select(sa.func.set_config(name, "on", True)))
                except DBAPIError as exc:  # e.g. an object dropped mid-read: no fingerprints, compared one by one
                    log.info("catalog fingerprints unavailable for a batch: %s", first_line(exc))
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

    def outside_snapshot(self) -> dict[str, Any]:
        with self.connect() as connection:
            return snapshot(connection, "public")

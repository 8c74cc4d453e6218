"""PostgreSQL: the indexed paths from a schema to what it holds, shared by every catalog query
(here, not in postgresql/: fingerprints.py uses them, and a SQLite run never imports psycopg).

pg_class has no index on relnamespace (pg_class_relname_nsp_index is (relname, relnamespace):
name first), nor pg_type on typnamespace: "every relation of schema X" written as a join on the
namespace reads all of pg_class, whose size is the whole fleet's (~53 rows a tenant). What is
indexed is pg_depend by what is depended on (pg_depend_reference_index: refclassid, refobjid,
refobjsubid), and every relation and every type that is not a row or array type records a
dependency on its schema there (PostgreSQL's heap.c and pg_type.c; ALTER ... SET SCHEMA moves
it). So a schema's objects are found through pg_depend, then each by oid: work proportional to
what the schema holds, never to the size of the database. A composite type's dependency is its
pg_type row's, so its pg_class row is reached through typrelid.

Each catalog query of the backend is a module-level constant (tests/test_catalog_indexes.py
EXPLAINs every one of them and refuses a sequential scan of a catalog that grows per tenant).
"""

from __future__ import annotations


def owned(classid: str, namespace_oid: str) -> str:
    """The pg_depend rows of the objects of catalog ``classid`` (pg_class, pg_type, pg_proc)
    that belong to the schema of oid ``namespace_oid`` (an SQL expression): their oids are
    ``objid``. One index range scan of pg_depend_reference_index."""
    return (
        f"SELECT d.objid FROM pg_catalog.pg_depend d WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass"
        f" AND d.refobjid = {namespace_oid} AND d.refobjsubid = 0 AND d.classid = 'pg_catalog.{classid}'::pg_catalog.regclass"
    )


def relations(namespace_oid: str) -> str:
    """The oids of the schema's relations of every kind but indexes (which belong to their
    table) and TOAST tables (which live in pg_toast): those with a dependency of their own,
    and composite types' (through their pg_type row)."""
    return (
        f"{owned('pg_class', namespace_oid)}"
        f" UNION ALL SELECT t.typrelid FROM pg_catalog.pg_type t WHERE t.oid IN ({owned('pg_type', namespace_oid)})"
        " AND t.typtype = 'c' AND t.typrelid <> 0"
    )

"""The parts of a catalog snapshot (catalog.py) beyond tables, keys and indexes: CHECK
constraints, table and column comments, views, triggers, and on PostgreSQL functions,
procedures and domains. Each kind is in the snapshot only when the namespace holds one, so a
snapshot of a chain that creates none is what it was before these were read (and the shipped
revision snapshots stay valid).

Definitions are the database's own text (pg_get_viewdef, pg_get_triggerdef,
pg_get_functiondef, pg_get_constraintdef; SQLite's stored statement), read with the tenant's
schema first on the search_path, so references to the tenant's own objects are unqualified.
pg_get_functiondef names the function with its schema: that prefix is removed.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .catalog_paths import owned

# Each reads the schema's objects through pg_depend, then by oid (catalog_paths.py): pg_class,
# pg_proc and pg_type have no index on the namespace alone, and their size is the fleet's.
_PG_TRIGGERS = sa.text(f"""
WITH nsp AS (SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n WHERE n.nspname = coalesce(:schema, current_schema()))
SELECT g.tgname, t.relname, pg_catalog.pg_get_triggerdef(g.oid)
FROM pg_catalog.pg_class t JOIN pg_catalog.pg_trigger g ON g.tgrelid = t.oid
WHERE t.oid IN ({owned("pg_class", "(SELECT oid FROM nsp)")}) AND NOT g.tgisinternal
""")
_PG_FUNCTIONS = sa.text(f"""
WITH nsp AS (SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n WHERE n.nspname = coalesce(:schema, current_schema()))
SELECT p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
       pg_catalog.pg_get_functiondef(p.oid), pg_catalog.quote_ident((SELECT nspname FROM nsp)) || '.'
FROM pg_catalog.pg_proc p
WHERE p.oid IN ({owned("pg_proc", "(SELECT oid FROM nsp)")}) AND p.prokind IN ('f', 'p')
""")
_PG_DOMAINS = sa.text(f"""
WITH nsp AS (SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n WHERE n.nspname = coalesce(:schema, current_schema()))
SELECT t.typname, pg_catalog.format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
       (SELECT array_agg(k.conname || ' ' || pg_catalog.pg_get_constraintdef(k.oid) ORDER BY k.conname)
        FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid)
FROM pg_catalog.pg_type t
WHERE t.oid IN ({owned("pg_type", "(SELECT oid FROM nsp)")}) AND t.typtype = 'd'
""")


def table_parts(inspector: Any, schema: str | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """table -> its CHECK constraints ([name, expression], sorted) and comment, where it has any."""
    if not names:
        return {}
    checks = inspector.get_multi_check_constraints(schema=schema, filter_names=names)
    postgresql = inspector.dialect.name == "postgresql"  # SQLite has no comments
    comments = inspector.get_multi_table_comment(schema=schema, filter_names=names) if postgresql else {}
    parts: dict[str, dict[str, Any]] = {}
    for (_, table), found in checks.items():
        if found:
            parts.setdefault(table, {})["checks"] = sorted([c.get("name"), c["sqltext"]] for c in found)
    for (_, table), comment in comments.items():
        if comment.get("text") is not None:
            parts.setdefault(table, {})["comment"] = comment["text"]
    return parts


def namespace_parts(connection: Connection, inspector: Any, schema: str | None) -> dict[str, Any]:
    """The snapshot's entries for views, triggers and (PostgreSQL) functions and domains, each
    only when there is one."""
    parts: dict[str, Any] = {}
    views = {name: inspector.get_view_definition(name, schema=schema) for name in inspector.get_view_names(schema=schema)}
    if connection.dialect.name == "postgresql":
        views.update(
            {
                f"{name} (materialized)": inspector.get_view_definition(name, schema=schema)
                for name in inspector.get_materialized_view_names(schema=schema)
            }
        )
        triggers = {name: [table, definition] for name, table, definition in connection.execute(_PG_TRIGGERS, {"schema": schema})}
        functions = {
            signature: definition.replace(f"FUNCTION {prefix}", "FUNCTION ", 1).replace(f"PROCEDURE {prefix}", "PROCEDURE ", 1)
            for signature, definition, prefix in connection.execute(_PG_FUNCTIONS, {"schema": schema})
        }
        domains = {
            name: {"type": type_, "not_null": bool(not_null), "default": default, "checks": list(checks or [])}
            for name, type_, not_null, default, checks in connection.execute(_PG_DOMAINS, {"schema": schema})
        }
        parts.update({k: v for k, v in (("functions", functions), ("domains", domains)) if v})
    else:
        rows = connection.exec_driver_sql("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")
        triggers = {name: [table, definition] for name, table, definition in rows}
    if views:
        parts["views"] = views
    if triggers:
        parts["triggers"] = triggers
    return parts

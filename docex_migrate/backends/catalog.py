"""Reading a normalised catalog snapshot of one tenant namespace (see docex_migrate/snapshot.py).

The dialects differ in what their reflection returns, so this lives with the backends.

Tables, columns (type, nullability, server default), primary keys, foreign keys with ON DELETE,
unique constraints, indexes with their columns and sort order, PostgreSQL enum types and sequences.
Column order is left out on purpose: a column added by a revision is appended on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..chain import VERSION_TABLE

IGNORED_TABLES = {VERSION_TABLE}
Snapshot = dict[str, Any]  # {"tables": {...}, and on PostgreSQL "enums", "sequences"}


def _ondelete(value: str | None) -> str | None:
    value = (value or "").upper()
    return None if value in ("", "NO ACTION") else value


def _type(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    if isinstance(type_, sa.Enum):  # by name and labels; a schema qualifier depends on search_path
        return f"ENUM {type_.name}({', '.join(type_.enums)})"
    return str(type_.compile(dialect=dialect))


def _index_columns(connection: Connection, index: Any) -> list[list[str]]:  # a ReflectedIndex
    if connection.dialect.name == "sqlite":
        # SQLite's reflection drops DESC; index_xinfo has it (key=1 rows are the indexed columns).
        quoted = connection.dialect.identifier_preparer.quote(index["name"])
        rows = connection.exec_driver_sql(f"PRAGMA index_xinfo({quoted})").all()
        return [[row[2], "desc" if row[3] else "asc"] for row in rows if row[5]]
    sorting = index.get("column_sorting") or {}
    return [[c, "desc" if "desc" in sorting.get(c, ()) else "asc"] for c in index["column_names"]]


def snapshot(connection: Connection, schema: str | None = None) -> Snapshot:
    inspector = sa.inspect(connection)
    dialect = connection.dialect
    names = sorted(set(inspector.get_table_names(schema=schema)) - IGNORED_TABLES)
    # One query per kind for all the tables (what get_columns etc. run per table): on a database
    # holding thousands of tenants each of those queries reads large catalogs.
    by_table: dict[str, dict[str, Any]] = {}
    for kind, method in (
        ("columns", inspector.get_multi_columns),
        ("pk", inspector.get_multi_pk_constraint),
        ("fks", inspector.get_multi_foreign_keys),
        ("uniques", inspector.get_multi_unique_constraints),
        ("indexes", inspector.get_multi_indexes),
    ):
        found = method(schema=schema, filter_names=names) if names else {}
        by_table[kind] = {key[1]: value for key, value in found.items()}
    tables: dict[str, Any] = {}
    for table in names:
        columns = {
            c["name"]: {
                "type": _type(c["type"], dialect),
                "nullable": bool(c["nullable"]),
                "default": c.get("default"),
            }
            for c in by_table["columns"][table]
        }
        pk = by_table["pk"][table]
        foreign_keys = sorted(
            [
                fk.get("name"),
                fk["constrained_columns"],
                fk["referred_table"],
                fk["referred_columns"],
                _ondelete((fk.get("options") or {}).get("ondelete")),
            ]
            for fk in by_table["fks"][table]
        )
        uniques = sorted([u.get("name"), u["column_names"]] for u in by_table["uniques"][table])
        indexes = {
            ix["name"]: {"columns": _index_columns(connection, ix), "unique": bool(ix["unique"])}
            for ix in by_table["indexes"][table]
            if not ix.get("duplicates_constraint")
        }
        tables[table] = {
            "columns": columns,
            "primary_key": {"name": pk.get("name"), "columns": pk["constrained_columns"]},
            "foreign_keys": foreign_keys,
            "unique_constraints": uniques,
            "indexes": indexes,
        }
    result: Snapshot = {"tables": tables}
    if dialect.name == "postgresql":
        result["enums"] = sorted([e["name"], list(e["labels"])] for e in inspector.get_enums(schema=schema))  # type: ignore[attr-defined]  # PGInspector
        result["sequences"] = sorted(inspector.get_sequence_names(schema=schema))
    return result


def empty_snapshot(dialect_name: str) -> Snapshot:
    """What a namespace at base (an empty alembic_version) holds: nothing, as ``snapshot`` says it."""
    return {"tables": {}, "enums": [], "sequences": []} if dialect_name == "postgresql" else {"tables": {}}

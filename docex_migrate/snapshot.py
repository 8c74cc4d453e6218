"""A normalised catalog snapshot of one tenant namespace, for comparing schemas exactly.

Tables, columns (type, nullability, server default), primary keys, foreign keys with ON DELETE,
unique constraints, indexes with their columns and sort order, PostgreSQL enum types and sequences.
Column order is left out on purpose: a column added by a revision is appended on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

IGNORED_TABLES = {"alembic_version"}


def _ondelete(value: str | None) -> str | None:
    value = (value or "").upper()
    return None if value in ("", "NO ACTION") else value


def _type(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> str:
    if isinstance(type_, sa.Enum):  # by name and labels; a schema qualifier depends on search_path
        return f"ENUM {type_.name}({', '.join(type_.enums)})"
    return str(type_.compile(dialect=dialect))


def _index_columns(connection: Connection, index: dict[str, Any]) -> list[list[str]]:
    if connection.dialect.name == "sqlite":
        # SQLite's reflection drops DESC; index_xinfo has it (key=1 rows are the indexed columns).
        quoted = connection.dialect.identifier_preparer.quote(index["name"])
        rows = connection.exec_driver_sql(f"PRAGMA index_xinfo({quoted})").all()
        return [[row[2], "desc" if row[3] else "asc"] for row in rows if row[5]]
    sorting = index.get("column_sorting") or {}
    return [[c, "desc" if "desc" in sorting.get(c, ()) else "asc"] for c in index["column_names"]]


def snapshot(connection: Connection, schema: str | None = None) -> dict[str, Any]:
    inspector = sa.inspect(connection)
    dialect = connection.dialect
    names = sorted(set(inspector.get_table_names(schema=schema)) - IGNORED_TABLES)
    # One query per kind for all the tables (what get_columns etc. run per table): on a database
    # holding thousands of tenants each of those queries reads large catalogs.
    multi = dict(schema=schema, filter_names=names) if names else None
    by_table = {
        kind: {key[1]: value for key, value in method(**multi).items()} if multi else {}
        for kind, method in (("columns", inspector.get_multi_columns), ("pk", inspector.get_multi_pk_constraint),
                             ("fks", inspector.get_multi_foreign_keys), ("uniques", inspector.get_multi_unique_constraints),
                             ("indexes", inspector.get_multi_indexes))
    }
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
    result: dict[str, Any] = {"tables": tables}
    if dialect.name == "postgresql":
        result["enums"] = sorted([e["name"], list(e["labels"])] for e in inspector.get_enums(schema=schema))
        result["sequences"] = sorted(inspector.get_sequence_names(schema=schema))
    return result


def differences(expected: dict[str, Any], actual: dict[str, Any], path: str = "") -> list[str]:
    """Readable lines naming every place two snapshots differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines = []
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                lines.append(f"missing {where}: {expected[key]!r}")
            elif key not in expected:
                lines.append(f"extra {where}: {actual[key]!r}")
            else:
                lines.extend(differences(expected[key], actual[key], where))
        return lines
    return [] if expected == actual else [f"{path}: expected {expected!r}, found {actual!r}"]

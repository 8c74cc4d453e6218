"""Helpers for revision scripts, so every revision runs online and renders offline (--sql).

SQLite cannot ALTER most things: Alembic's batch mode rebuilds the table, which needs the
table's current definition. Online it is reflected; offline (--sql) there is nothing to reflect,
so docex-migrate's offline rendering provides the definition through
``config.attributes["offline_tables"]`` (a callable: table name -> Table, reflected from a
scratch copy of the schema at that point of the chain). Use ``batch_alter_table`` from here
instead of ``op.batch_alter_table``.

SQLite's reflection also loses the ``DESC`` of an index column, so a rebuild would create the
table's DESC indexes ascending (a tenant no longer equal to its revision, a downgrade that
leaves a trace). Online, ``batch_alter_table`` puts them back as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import op
from sqlalchemy.engine import Connection

IndexColumns = list[tuple[str, bool]]  # (column, descending), in key order


@contextmanager
def batch_alter_table(table_name: str, **kw: Any) -> Iterator[Any]:  # yields alembic's BatchOperations
    context = op.get_context()
    tables = context.config.attributes.get("offline_tables") if context.config else None
    if tables is not None and "copy_from" not in kw:
        kw["copy_from"] = tables(table_name)
    online_sqlite = not context.as_sql and context.dialect.name == "sqlite"
    descending = _descending_indexes(op.get_bind(), table_name) if online_sqlite else {}
    with op.batch_alter_table(table_name, **kw) as batch:
        yield batch
    if descending:
        _restore_descending(op.get_bind(), table_name, descending)


def dialect_name() -> str:
    """The database the revision runs on (or renders for, offline)."""
    return op.get_context().dialect.name


def _index_columns(connection: Connection, index: str) -> IndexColumns:
    rows = connection.exec_driver_sql(f"PRAGMA index_xinfo({_quoted(index)})").all()
    return [(str(row[2]), bool(row[3])) for row in rows if row[5]]  # key columns only (not the rowid)


def _descending_indexes(connection: Connection, table: str) -> dict[str, tuple[str, IndexColumns]]:
    """The table's indexes with a DESC column: name -> (the SQL that created it, its columns)."""
    rows = connection.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
    ).all()
    found = {}
    for name, sql in rows:
        columns = _index_columns(connection, name)
        if any(desc for _, desc in columns):
            found[name] = (sql, columns)
    return found


def _restore_descending(connection: Connection, table: str, before: dict[str, tuple[str, IndexColumns]]) -> None:
    """Create again, from their own SQL, the indexes a rebuild created without their DESC. An
    index the batch dropped, moved or changed the columns of is left as the batch made it."""
    for name, (sql, columns) in before.items():
        still = connection.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ? AND tbl_name = ?", (name, table)
        ).first()
        if still is None:
            continue
        now = _index_columns(connection, name)
        if now != columns and [c for c, _ in now] == [c for c, _ in columns]:
            connection.exec_driver_sql(f"DROP INDEX {_quoted(name)}")
            connection.exec_driver_sql(sql)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

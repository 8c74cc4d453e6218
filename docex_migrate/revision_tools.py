"""Helpers for revision scripts, so every revision runs online and renders offline (--sql).

SQLite cannot ALTER most things: Alembic's batch mode rebuilds the table, which needs the
table's current definition. Online it is reflected; offline (--sql) there is nothing to reflect,
so docex-migrate's offline rendering provides the definition through
``config.attributes["offline_tables"]`` (a callable: table name -> Table, reflected from a
scratch copy of the schema at that point of the chain). Use this instead of
``op.batch_alter_table``.
"""

from __future__ import annotations

from typing import Any

from alembic import op


def batch_alter_table(table_name: str, **kw: Any) -> Any:  # alembic's BatchOperations context manager
    config = op.get_context().config
    tables = config.attributes.get("offline_tables") if config else None
    if tables is not None and "copy_from" not in kw:
        kw["copy_from"] = tables(table_name)
    return op.batch_alter_table(table_name, **kw)


def dialect_name() -> str:
    """The database the revision runs on (or renders for, offline)."""
    return op.get_context().dialect.name

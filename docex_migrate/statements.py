"""Plain SQL that the Alembic engine (runner.py) and the backends both speak: a tenant's version
rows, read in one statement, and statements recorded as the driver received them (the chain's
recording, replayed into fresh tenants). Vocabulary: imports nothing of ours but chain.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from .chain import VERSION_TABLE

Recorded = tuple[str, Any]  # a statement and its parameters, as the driver received them
Recording = list[Recorded]  # statements in the order they were sent


def version_rows(connection: Connection, version_table_schema: str | None) -> tuple[str, ...]:
    # Plain SQL: a select() built per tenant cost more than the query (its cache key, per schema).
    preparer = connection.dialect.identifier_preparer
    table = preparer.quote(VERSION_TABLE)
    if version_table_schema is not None:
        table = f"{preparer.quote_schema(version_table_schema)}.{table}"
    return tuple(row[0] for row in connection.exec_driver_sql(f"SELECT version_num FROM {table}"))

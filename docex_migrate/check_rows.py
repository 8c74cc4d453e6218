"""Representative rows for a tenant, generated from its schema as it is (for the `data` check),
and every row of a tenant read back in a form two reads can be compared in.

Each batch adds three rows to a table: the first with every column set, the second with every
nullable column NULL, the third repeating the first wherever no primary key, unique constraint
or unique index forbids it; later batches number their values on, so keys never collide. Values follow each column's type (an enum takes its labels) and fit
its length; a foreign key takes the key of a real row of the table it points at, so parents are
filled first. A table the generator cannot fill (a CHECK constraint it cannot satisfy, a type it
does not know and that may not be NULL) is left empty and named.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .backends import Backend
from .snapshot import IGNORED_TABLES

ROWS = 3
TableRows = dict[str, list[str]]  # table -> each row as one comparable line


def _keys(table: sa.Table) -> list[set[str]]:
    """The column sets no two rows may share (primary key, unique constraints and indexes)."""
    keys = [{c.name for c in table.primary_key.columns}] if table.primary_key.columns else []
    keys += [{c.name for c in con.columns} for con in table.constraints if isinstance(con, sa.UniqueConstraint)]
    keys += [{c.name for c in ix.columns} for ix in table.indexes if ix.unique]
    return [k for k in keys if k]


def _value(column: sa.Column[Any], row: int) -> Any:
    """A value of the column's type for row number ``row``; None for a type not known here."""
    type_ = column.type
    if isinstance(type_, sa.Enum) and type_.enums:
        return type_.enums[row % len(type_.enums)]
    if isinstance(type_, sa.Boolean):
        return row % 2 == 0
    if isinstance(type_, sa.Integer):
        return row + 1
    if isinstance(type_, sa.Numeric):
        return decimal.Decimal(row + 1) if type_.asdecimal else float(row + 1)
    if isinstance(type_, sa.DateTime):
        return dt.datetime(2024, 1, 1, 12, 30) + dt.timedelta(days=row)
    if isinstance(type_, sa.Date):
        return dt.date(2024, 1, 1) + dt.timedelta(days=row)
    if isinstance(type_, sa.Time):
        return dt.time(12, row % 60)
    if isinstance(type_, sa.JSON):
        return {"row": row, "note": f"{column.name} {row}"}
    if isinstance(type_, sa.Uuid):
        value = uuid.UUID(int=row + 1)
        return value if type_.as_uuid else str(value)
    if isinstance(type_, sa.LargeBinary):
        return bytes([row % 256]) * 4
    if isinstance(type_, sa.String):
        text = f"{column.name}-{row}"
        length = type_.length
        return text[-length:] if length else text
    return None


def _parent_keys(connection: Connection, fk: sa.ForeignKeyConstraint) -> list[tuple[Any, ...]]:
    parent = fk.referred_table
    columns = [parent.c[element.column.name] for element in fk.elements]
    return [tuple(r) for r in connection.execute(sa.select(*columns).order_by(*columns).limit(ROWS))]


def _rows(connection: Connection, table: sa.Table, first: int) -> list[dict[str, Any]]:
    """ROWS new rows numbered from ``first`` (distinct from earlier batches wherever a key needs it)."""
    keys = _keys(table)
    keyed = set().union(*keys) if keys else set()
    rows: list[dict[str, Any]] = []
    for n in range(ROWS):
        values: dict[str, Any] = {}
        for column in table.columns:
            if n == 1 and column.nullable:
                values[column.name] = None
            elif n == 2 and column.name not in keyed:
                values[column.name] = rows[0][column.name]  # a duplicate, where the schema allows one
            else:
                values[column.name] = _value(column, first + n)
        rows.append(values)
    for fk in table.foreign_key_constraints:
        names = [element.parent.name for element in fk.elements]
        parents = _parent_keys(connection, fk) if fk.referred_table is not table else []
        for n, values in enumerate(rows):
            if n == 1 and all(values[name] is None for name in names):
                continue  # a nullable foreign key left NULL
            if not parents:
                values.update(dict.fromkeys(names))
                continue
            key = parents[0] if n == 2 and not set(names) & keyed else parents[n % len(parents)]
            values.update(zip(names, key, strict=True))
    return rows


def reflect(backend: Backend, tenant_id: str) -> list[sa.Table]:
    """The tenant's tables as they are now, parents before children."""
    engine = backend.reflection_engine(tenant_id)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
    finally:
        engine.dispose()
    return [t for t in metadata.sorted_tables if t.name not in IGNORED_TABLES]


def fill(backend: Backend, tenant_id: str, tables: list[sa.Table], *, first: int, only_empty: bool = False) -> dict[str, int]:
    """Add ROWS rows numbered from ``first`` to each of ``tables`` (reflect()'s, parents first),
    or only to the empty ones; committed. Returns each table's row count: 0 for a table the
    generator could not fill."""
    counts = {}
    with backend.transaction(tenant_id, create=False) as connection:
        for table in tables:
            count = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            if not (only_empty and count):
                with connection.begin_nested() as savepoint:
                    try:
                        connection.execute(table.insert(), _rows(connection, table, first))
                        count += ROWS
                    except sa.exc.DBAPIError:
                        savepoint.rollback()  # this table gets no more rows: the others still do
            counts[table.name] = count
    return counts


def _line(row: sa.Row[Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(row._mapping.items()))


def counts(backend: Backend, tenant_id: str) -> dict[str, int]:
    """Each table's row count, without reflecting the tables (which is slow on PostgreSQL)."""
    engine = backend.reflection_engine(tenant_id)
    try:
        with engine.connect() as connection:
            names = [n for n in sa.inspect(connection).get_table_names() if n not in IGNORED_TABLES]
            quote = connection.dialect.identifier_preparer.quote
            return {n: connection.exec_driver_sql(f"SELECT count(*) FROM {quote(n)}").scalar_one() for n in names}
    finally:
        engine.dispose()


def read(backend: Backend, tenant_id: str) -> TableRows:
    """Every row of every table of the tenant, each as one line (columns by name), sorted."""
    engine = backend.reflection_engine(tenant_id)
    try:
        with engine.connect() as connection:
            names = [n for n in sa.inspect(connection).get_table_names() if n not in IGNORED_TABLES]
            quote = connection.dialect.identifier_preparer.quote
            return {n: sorted(_line(r) for r in connection.exec_driver_sql(f"SELECT * FROM {quote(n)}")) for n in names}
    finally:
        engine.dispose()

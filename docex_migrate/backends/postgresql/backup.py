"""PostgreSQL: a tenant schema's backup as a plain SQL dump, written through the driver when
pg_dump is not installed (driver_dump), and what a dump holds, read back (read_dump), so that
deprovision.py can prove the backup holds what it drops."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateSchema


def driver_dump(connection: Connection, schema: str) -> str:
    """A plain SQL dump of one schema (tables and rows) for when pg_dump is not installed."""
    reflected = sa.MetaData(schema=schema)
    reflected.reflect(bind=connection)
    dialect = connection.dialect
    lines = [
        f"-- docex-migrate backup of schema {schema} (written through the driver)",
        str(CreateSchema(schema, if_not_exists=True).compile(dialect=dialect)) + ";",
    ]
    for table in reflected.sorted_tables:
        lines.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip() + ";")
        for index in table.indexes:
            lines.append(str(sa.schema.CreateIndex(index).compile(dialect=dialect)) + ";")
        # Rows travel as JSON (row_to_json / json_populate_record), so every column type
        # round-trips without a literal renderer of its own.
        qualified = f"{dialect.identifier_preparer.format_table(table)}"
        rows = connection.execute(
            sa.select(sa.func.row_to_json(sa.literal_column("t")).cast(sa.Text)).select_from(table.alias("t"))
        ).scalars()
        for row in rows:
            literal = sa.literal(row, sa.Text).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            lines.append(f"INSERT INTO {qualified} SELECT * FROM json_populate_record(NULL::{qualified}, {literal});")
    return "\n".join(lines) + "\n"


_IDENT = r'(?:"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE_SCHEMA = re.compile(rf"CREATE SCHEMA (?:IF NOT EXISTS )?({_IDENT})")
_CREATE = re.compile(
    rf"CREATE (?:UNLOGGED )?(TABLE|VIEW|MATERIALIZED VIEW|FOREIGN TABLE|SEQUENCE|TYPE) (?:IF NOT EXISTS )?({_IDENT})\.({_IDENT})"
)
COPY_STATEMENT = re.compile(rf"COPY ({_IDENT})\.({_IDENT}) .*FROM stdin;$")  # pg_dump: one line per row, up to \.
_INSERT = re.compile(rf"INSERT INTO ({_IDENT})\.({_IDENT}) ")  # driver_dump: one line per row


def _name(identifier: str) -> str:
    """The name an SQL identifier stands for: quoted exactly, unquoted folded to lower case."""
    return identifier[1:-1].replace('""', '"') if identifier.startswith('"') else identifier.lower()


def read_dump(path: Path, schema: str) -> tuple[bool, set[tuple[str, str]], Counter[str]]:
    """What a plain SQL dump (pg_dump's or driver_dump's) holds of ``schema``: whether it creates
    the schema, the (keyword, name) of each object it creates there, and rows per table."""
    creates_schema, objects, rows = False, set[tuple[str, str]](), Counter[str]()
    copying = None  # inside a COPY block: the table its rows are counted for ('' if not this schema's)
    with path.open(encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            line = line.rstrip("\n")
            if copying is not None:
                if line == "\\.":
                    copying = None
                else:
                    rows[copying] += 1
            elif match := _CREATE_SCHEMA.match(line):
                creates_schema = creates_schema or _name(match[1]) == schema
            elif match := _CREATE.match(line):
                if _name(match[2]) == schema:
                    objects.add((match[1], _name(match[3])))
            elif match := COPY_STATEMENT.match(line) or _INSERT.match(line):
                in_schema = _name(match[1]) == schema
                table = _name(match[2]) if in_schema else None
                if line.startswith("COPY"):
                    copying = table or ""
                elif table:
                    rows[table] += 1
    rows.pop("", None)
    return creates_schema, objects, rows

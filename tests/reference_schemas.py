"""Load DocEX's reference dumps into a real namespace and snapshot it, for exact comparison."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from docex_migrate.snapshot import snapshot

REFERENCE = Path(__file__).resolve().parent / "reference"
# DocEX 2.9.10's own dumps ship in the package (the docex-compat check reads them there): one copy.
PACKAGED = Path(__file__).resolve().parents[1] / "docex_migrate" / "reference"

# Revision -> the reference files of that generation.
GENERATIONS = {
    "s1_docex_0_2_0": "S1-docex-0.2.0",
    "s2_docex_2_0_3": "S2-docex-2.0.3",
    "s3_docex_2_2_1": "S3-docex-2.2.1",
    "s4_docex_2_6_1": "S4-docex-2.6.1",
    "s5_docex_2_8_4": "S5-docex-2.8.4",
    "s6_docex_2_8_8": "S6-docex-2.8.8",
}
HEAD_SQLITE = "docex-2.9.10-tenant.sqlite.sql"
HEAD_PG = "docex-2.9.10-tenant.pg.sql"


def _reference_file(sql_file: str) -> Path:
    return PACKAGED / sql_file if (PACKAGED / sql_file).exists() else REFERENCE / sql_file


def sqlite_reference(sql_file: str, path: Path) -> dict:
    db = sqlite3.connect(path)
    db.executescript(_reference_file(sql_file).read_text())
    db.close()
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        return snapshot(conn)


def pg_statements(sql_file: str, schema: str) -> list[str]:
    """The DDL of a PostgreSQL reference file, ready to run inside ``schema``."""
    text = _reference_file(sql_file).read_text()
    # S1/S2: the native enum types are named in the header comments; create them first.
    types = re.findall(r"^--\s+(CREATE TYPE .*;)\s*$", text, flags=re.M)
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    body = body.replace("CREATE SCHEMA tenant_acme_corp;", "").replace("tenant_acme_corp.", f'"{schema}".')
    return types + [s.strip() for s in body.split(";") if s.strip()]


def pg_reference(sql_file: str, engine: sa.Engine, schema: str) -> dict:
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        for statement in pg_statements(sql_file, schema):
            conn.exec_driver_sql(statement)
    with engine.connect() as conn:
        return snapshot(conn, schema)


def statements(sql_file: str, kind: str, schema: str | None = None) -> list[str]:
    """The DDL of a reference file as separate statements, for building legacy tenants."""
    if kind == "postgres":
        return pg_statements(sql_file, schema)
    text = "\n".join(line for line in _reference_file(sql_file).read_text().splitlines() if not line.startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def index_statements(sql_file: str, kind: str, schema: str | None = None) -> list[str]:
    return [s for s in statements(sql_file, kind, schema) if s.upper().startswith("CREATE INDEX")]

"""PostgreSQL: restoring a deprovisioned tenant from its backup (pg_dump's plain dump, or
backup.driver_dump's), in one transaction under the tenant's lock: the schema appears whole,
checked against what the dump holds, or not at all.

The dump is sent through the driver, not psql (which may not be installed, and whose session
could not share our lock and checks): its SQL as simple queries, its COPY blocks through the
driver's COPY, its header's session settings made local to the transaction, psql's own
``\\restrict`` lines left out."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ...errors import RestoreRefusedError
from ...interrupts import hold
from ...statements import version_rows
from ..catalog_paths import relations
from .backup import COPY_STATEMENT, read_dump
from .connections import first_line
from .deprovision import schema_contents
from .fresh import _DROPPED_SETTINGS, _HEADER_SET, _SESSION_SEARCH_PATH
from .sessions import PostgresSessions, ends_transaction, lock_tenant

_END_OF_COPY = "\\."
_PSQL_ONLY = ("\\restrict ", "\\unrestrict ")  # psql's guard lines (pg_dump 15.14+), not SQL
_FIRST_ENTRY = "-- Name: "  # pg_dump's comment above each entry: the header ends before the first


def _refused(tenant_id: str, backup: Path, why: str) -> RestoreRefusedError:
    return RestoreRefusedError(f"tenant {tenant_id!r}: backup {backup} {why}; nothing restored")


def _header_line(line: str) -> str:
    """A line of pg_dump's header as it runs inside our transaction: its session settings
    local to it (its timeouts, 0, and the encoding, the driver's, left out). Only the header:
    the body stays as pg_dump wrote it (a line in a function body may look like a SET), its
    SETs between entries included (defaults: the connection is closed after the restore)."""
    if line.rstrip("\n") == _SESSION_SEARCH_PATH:
        return "SELECT pg_catalog.set_config('search_path', '', true);\n"
    setting = _HEADER_SET.fullmatch(line.rstrip("\n"))
    if setting is None:
        return line
    if setting[1] == "client_encoding" and setting[2].strip("'").upper() not in ("UTF8", "UTF-8"):
        raise ValueError(f"it is in encoding {setting[2]}, not UTF8")
    return "" if setting[1] in _DROPPED_SETTINGS else f"SET LOCAL {setting[1]} = {setting[2]};\n"


def _statements(lines: TextIO) -> Iterator[tuple[str, Iterator[str] | None]]:
    """The dump in order: (SQL, None) for the SQL between COPY blocks, (COPY statement, its
    data lines) for each block (the data must be read before the next item is asked for)."""
    sql: list[str] = []
    header = True  # up to pg_dump's first entry (a driver_dump has no settings to rewrite)
    for line in lines:
        if line.startswith(_PSQL_ONLY):
            continue
        header = header and not line.startswith(_FIRST_ENTRY)
        if COPY_STATEMENT.match(line.rstrip("\n")):
            if sql:
                yield "".join(sql), None
                sql = []
            yield line.rstrip("\n").rstrip(";"), _copy_data(lines)
            continue
        sql.append(_header_line(line) if header else line)
    if "".join(sql).strip():
        yield "".join(sql), None


def _copy_data(lines: TextIO) -> Iterator[str]:
    for line in lines:
        if line.rstrip("\n") == _END_OF_COPY:
            return
        yield line
    raise ValueError("it ends inside a table's rows (truncated)")


# Every relation's name in the schema, its indexes' too (catalog_paths.py: through pg_depend,
# then by oid; never a scan of pg_class, whose size is the fleet's).
_RELATION_NAMES = sa.text(f"""
WITH nsp AS (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = :schema),
rel AS (SELECT c.oid, c.relname FROM pg_catalog.pg_class c WHERE c.oid IN ({relations("(SELECT oid FROM nsp)")}))
SELECT relname FROM rel
UNION ALL
SELECT i.relname FROM rel JOIN pg_catalog.pg_index x ON x.indrelid = rel.oid JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
""")


class _Hashing(io.RawIOBase):
    """The file's bytes as they are read, hashed: what is loaded is proven to be the backup
    recorded, even if the file changed after it was first checked."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw, self.digest = raw, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.digest.update(memoryview(buffer)[:n])
        return n


class PostgresRestore(PostgresSessions):
    """Backend.restore."""

    def restore(self, tenant_id: str, backup: Path, revision: str | None, sha256: str) -> str | None:
        schema = self.namespace(tenant_id)
        creates_schema, objects, rows = read_dump(backup, schema)
        if not creates_schema:
            raise _refused(tenant_id, backup, f"does not create schema {schema!r}: it is not this tenant's")
        with self.connect() as connection:
            with connection.begin():
                exists, _ = lock_tenant(connection, schema, self.timeouts)
                if exists:
                    raise RestoreRefusedError(
                        f"tenant {tenant_id!r} exists (schema {schema!r}): restore never overwrites a tenant; "
                        "deprovision it first if it must be replaced; nothing restored"
                    )
                self._load(connection, tenant_id, backup, sha256)
                self._check(connection, tenant_id, backup, schema, objects, rows, revision)
                identity = self.identity(tenant_id, connection)
                hold()  # it commits now: a signal from here on no longer undoes it (interrupts.py)
        return identity

    def _load(self, connection: Connection, tenant_id: str, backup: Path, sha256: str) -> None:
        driver: Any = connection.connection.driver_connection  # psycopg's Connection
        try:
            with backup.open("rb", buffering=0) as raw, driver.cursor() as cursor:
                hashing = _Hashing(raw)  # type: ignore[arg-type]  # unbuffered: a FileIO, read into
                lines = io.TextIOWrapper(io.BufferedReader(hashing), encoding="utf-8", newline="\n")
                for statement, data in _statements(lines):
                    if data is None and ends_transaction(statement):
                        raise ValueError("a statement in it ends the transaction")
                    if data is None:
                        # Without parameters psycopg sends it as one simple query: several
                        # statements in one round trip, no placeholder parsing.
                        cursor.execute(statement)
                        continue
                    with cursor.copy(statement) as copy:
                        for line in data:
                            copy.write(line)
                if hashing.digest.hexdigest() != sha256:
                    raise ValueError("it changed since it was checked (its SHA-256 differs)")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _refused(tenant_id, backup, f"cannot be loaded: {exc}") from None
        except DBAPIError as exc:
            raise _refused(tenant_id, backup, f"does not load: {first_line(exc)}") from None
        except Exception as exc:  # psycopg's own errors (the COPY is the driver's, not SQLAlchemy's)
            if type(exc).__module__.startswith("psycopg"):
                raise _refused(tenant_id, backup, f"does not load: {str(exc).strip().splitlines()[0]}") from None
            raise

    def _check(
        self,
        connection: Connection,
        tenant_id: str,
        backup: Path,
        schema: str,
        objects: set[tuple[str, str]],
        rows: dict[str, int],
        revision: str | None,
    ) -> None:
        """Before commit: every object the dump creates is there, every table holds the rows
        the dump has for it, and the version rows say ``revision``; else the transaction rolls back."""
        present = {name for name, _ in schema_contents(connection, schema).items()}
        present |= set(connection.execute(_RELATION_NAMES, {"schema": schema}).scalars())
        problems = [f"no {kind.lower()} {name} after loading it" for kind, name in sorted(objects) if name not in present]
        for table, expected in sorted(rows.items()):
            counted = connection.execute(sa.select(sa.func.count()).select_from(sa.table(table, schema=schema))).scalar()
            if counted != expected:
                problems.append(f"{counted} of the {expected} rows of {table} loaded")
        if problems:
            raise _refused(tenant_id, backup, f"does not restore what it holds ({'; '.join(problems[:5])})")
        has_versions = ("TABLE", "alembic_version") in objects
        found = version_rows(connection, schema) if has_versions else ()
        if found != ((revision,) if revision else ()):
            raise _refused(
                tenant_id,
                backup,
                f"is at revision {', '.join(found) or 'base'}, not {revision or 'base'} as its deprovision recorded",
            )

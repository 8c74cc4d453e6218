"""PostgreSQL: fresh tenants from the head schema (see ../../fresh.py, which builds the template
through this interface). A workspace of committed scratch schemas; the head schema captured with
pg_dump and proven by replaying it once; a fresh tenant's schema made from the dump, or else from
the chain's recorded statements, in one transaction under its lock."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ...statements import Recording
from ..base import Backend, FreshTemplate, HeadDump
from ..catalog_paths import owned
from .connections import first_line
from .sessions import PostgresSessions

PROOF = "proof"  # the workspace's second schema, where the head dump is replayed to be proven

# Whether the schema holds a table: its relations through pg_depend (catalog_paths.py), each looked up
# by oid, never a scan of pg_class (every tenant's relations).
_HAS_TABLES = sa.text(
    "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid IN ("
    + owned("pg_class", "(SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = :schema)")
    + ") AND c.relkind IN ('r', 'p'))"
)


def replay(connection: Connection, recording: Recording) -> None:
    """Send a recording of the chain on ``connection``, inside its transaction: each statement
    with exactly the parameters the driver received when it was recorded, all of them in one
    round trip (psycopg's pipeline mode) instead of one per statement. An error surfaces when
    the pipeline ends, and fails the tenant's transaction as any other error would."""
    driver: Any = connection.connection.driver_connection  # psycopg's Connection
    pipeline = driver.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()  # libpq 14+
    with pipeline, driver.cursor() as cursor:
        for statement, parameters in recording:
            cursor.execute(statement, parameters)


# pg_dump's header settings are session-level: its timeouts (0) would lift the tenant's own for
# the rest of its transaction, and the encoding is the driver's business. The rest become SET LOCAL.
_DROPPED_SETTINGS = {
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "transaction_timeout",
    "client_encoding",
}
_HEADER_SET = re.compile(r"SET (\w+) = (.+);")
_SESSION_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', '', false);"


def head_dump(dump: str, schema: str) -> HeadDump | None:
    """pg_dump's plain output for ``schema`` made into what runs inside a tenant's
    transaction: the header's settings local, psql's own lines and CREATE SCHEMA out (the
    tenant's schema exists by then). None when the header holds anything else.

    Only the header is rewritten. The body stays as pg_dump wrote it, comments included (a
    line starting with '--' may as well be inside a function body or a row's text), and so
    do the SETs between its entries (default_tablespace, default_table_access_method: the
    values the scratch schema was made with; a reused connection is reset after the tenant)."""
    header, entry, rest = dump.partition("\n--\n-- Name: ")
    prelude, removed = [], [f"\nCREATE SCHEMA {schema};\n"]
    for line in header.splitlines():
        if not line or line.startswith("--"):
            continue
        if line.startswith("\\restrict "):  # psql's guard against a malicious server (pg_dump 15.14+)
            removed.append(f"\n\\un{line[1:]}\n")
        elif line == _SESSION_SEARCH_PATH:
            prelude.append("SELECT pg_catalog.set_config('search_path', '', true);")
        elif (setting := _HEADER_SET.fullmatch(line)) is None:
            return None
        elif setting[1] not in _DROPPED_SETTINGS:
            prelude.append(f"SET LOCAL {setting[1]} = {setting[2]};")
    body = entry + rest
    if not entry or any(line not in body for line in removed):
        return None
    for line in removed:
        body = body.replace(line, "\n", 1)
    return HeadDump("\n".join(prelude) + body.replace(f'"{schema}"', schema), schema)


def _comparable(dump: str, schema: str) -> list[str]:
    """A dump's lines with the schema's name taken out and psql's random restrict keys dropped."""
    return [line.replace(schema, "@") for line in dump.splitlines() if not line.startswith(("\\restrict ", "\\unrestrict "))]


class PostgresFresh(PostgresSessions):
    """Backend.fresh_workspace, capture_head and install_fresh."""

    @contextmanager
    def fresh_workspace(self) -> Iterator[Backend | str]:
        """Committed scratch schemas (pg_dump sees only what is committed), dropped at the end;
        or why not: pg_dump is not installed."""
        if shutil.which("pg_dump") is None:
            yield "pg_dump is not installed"
            return
        with self.scratch_template(committed=True) as template:
            workspace = self.with_template(template)
            try:
                yield workspace
            finally:
                workspace.dispose()

    def capture_head(self, tenant_id: str, target: str) -> FreshTemplate | str:
        """The tenant's schema, which the chain migrated to ``target`` and committed, dumped by
        pg_dump (schema and rows, as INSERTs the driver can send), then proven: replayed into a
        second schema of the workspace, whose own dump must be the same. Else why not: pg_dump
        failed (e.g. it is older than the server), or the proof did."""
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            return "pg_dump is not installed"
        head, proof = self.namespace(tenant_id), self.namespace(PROOF)
        options = ("--inserts", "--encoding", "UTF8")
        done = self._run_pg_dump(pg_dump, head, *options)
        if done.returncode != 0:
            return f"pg_dump failed ({done.stderr.strip()[:200]})"
        dump = head_dump(done.stdout, head)
        if dump is None:
            return "pg_dump's output is not laid out as expected"
        try:
            self.install_fresh(PROOF, dump, target)
        except DBAPIError as exc:
            return f"the head schema's dump does not replay ({first_line(exc)})"
        again = self._run_pg_dump(pg_dump, proof, *options)
        if again.returncode != 0 or _comparable(again.stdout, proof) != _comparable(done.stdout, head):
            return "the head schema's dump replays to another schema"
        return dump

    def install_fresh(self, tenant_id: str, template: FreshTemplate, target: str) -> str | None:
        """Replay the head dump (or the recording) in one transaction under the tenant's lock;
        nothing is done if the schema turns out not to be empty (any table, alembic_version
        included, means someone else got there)."""
        schema = self.namespace(tenant_id)
        with self.transaction(tenant_id, create=True) as connection:
            if connection.execute(_HAS_TABLES, {"schema": schema}).scalar():
                return None
            if isinstance(template, HeadDump):
                # Without parameters psycopg sends the whole string as one simple query: one round
                # trip, and no placeholder parsing ('%' in a function body stays as it is).
                driver: Any = connection.connection.driver_connection
                driver.execute(template.for_schema(connection.dialect.identifier_preparer.quote_identifier(schema)))
            else:
                assert isinstance(template, list), "PostgreSQL's fresh tenants get a head dump or a recording"
                replay(connection, template)
            return self.identity(tenant_id, connection)

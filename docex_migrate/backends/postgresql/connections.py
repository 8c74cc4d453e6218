"""PostgreSQL: connecting, and saying in one line why a connection failed; what the server allows
us (the connection budget for --jobs); libpq's tools (pg_dump) connected as the driver is.

Every other job of the backend (sessions.py, catalog_reads.py, scratch.py, fresh.py,
deprovision.py, ledger_place.py) builds on PostgresConnections."""

from __future__ import annotations

import math
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.conninfo import make_conninfo
from psycopg.pq import Conninfo
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ... import tenants
from ...config import Timeouts
from ...errors import DatabaseUnavailableError
from ..base import Backend

_FREE_CONNECTIONS = sa.text("""
    SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
             - (SELECT count(*) FROM pg_stat_activity),
           CASE WHEN r.rolsuper OR r.rolconnlimit < 0 THEN NULL
                ELSE r.rolconnlimit - (SELECT count(*) FROM pg_stat_activity WHERE usename = r.rolname) END,
           CASE WHEN r.rolsuper OR d.datconnlimit < 0 THEN NULL
                ELSE d.datconnlimit - (SELECT count(*) FROM pg_stat_activity WHERE datname = d.datname) END
    FROM pg_roles r, pg_database d
    WHERE r.rolname = session_user AND d.datname = current_database()
""")
pg_namespace = sa.table("pg_namespace", sa.column("oid"), sa.column("nspname"), schema="pg_catalog")


def first_line(exc: DBAPIError) -> str:
    text = str(exc.orig or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def schema_pattern(schema: str) -> str:
    """pg_dump's --schema takes a pattern, case-folded and with * ? as wildcards unless double
    quoted: quoted, it names exactly this schema (never 'tenant_t001' for 'Tenant_t001')."""
    return '"' + schema.replace('"', '""') + '"'


def ms(seconds: float) -> str:
    """Whole milliseconds, rounded up: 0 disables a limit in PostgreSQL, so a positive timeout
    must never become 0 (rounded to the microsecond first, so 1.1 s is 1100 ms, not 1101)."""
    if seconds <= 0:
        return "0"
    return f"{max(1, math.ceil(round(seconds * 1000, 3)))}ms"


# A session this process just closed is still counted against CONNECTION LIMIT and
# max_connections until its server process has exited, which takes a moment on a busy server:
# the next connection of a role allowed one is refused meanwhile. Such a refusal is retried for
# this long; a limit really reached still fails, with _explain's advice.
_SLOTS_FREEING_WAIT = 2.0
_NO_SLOT = ("53300", "too many connections", "too many clients", "remaining connection slots")


def _connect_past_exiting_sessions(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    deadline = time.monotonic() + _SLOTS_FREEING_WAIT
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except psycopg.OperationalError as exc:
            if not any(sign in f"{exc.sqlstate} {exc}" for sign in _NO_SLOT) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


class PostgresConnections(Backend):
    """The backend's settings and its connections; abstract: PostgresBackend composes the rest."""

    kind = "postgresql"

    def __init__(self, url: URL, schema_template: str, timeouts: Timeouts | None = None) -> None:
        tenants.validate_schema_template(schema_template)
        self.url = url
        self.template = schema_template
        self.timeouts = timeouts or Timeouts()
        # NullPool: a connection is never handed to anyone else. Within reusing_connection() the
        # tenants' transactions share one (sessions.py); outside it each gets a fresh one.
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            # No server-side prepared statements (psycopg prepares a query run 5 times): they
            # would outlive the transaction, and a PgBouncer in transaction mode sends the next
            # transaction to another server connection, where they do not exist.
            connect_args: dict[str, Any] = {"connect_timeout": 10, "prepare_threshold": None}
            if "application_name" not in self.url.query:  # names this process to a run waiting on its tenant lock
                connect_args["application_name"] = f"docex-migrate (pid {os.getpid()})"
            self._engine = sa.create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
            sa.event.listen(self._engine, "do_connect", _connect_past_exiting_sessions)
        return self._engine

    def describe(self) -> str:
        return f"PostgreSQL {self.url.render_as_string(hide_password=True)} schemas {self.template}"

    def where(self) -> str:
        url = self.url
        return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"

    def connect(self) -> Connection:
        try:
            return self.engine.connect()
        except DBAPIError as exc:
            raise DatabaseUnavailableError(self._explain(exc)) from None

    def _explain(self, exc: DBAPIError) -> str:
        """One line for a connection failure: where, what, and the fix. Never the password."""
        reason = " ".join(str(exc.orig or exc).split())
        where, user, database = self.where(), self.url.username or "the current user", self.url.database
        no_database = (  # a URL without a database name connects to libpq's default, the user's name
            f"database {database!r} does not exist at {where}: create it (createdb {database}) or fix database.postgres.database"
            if database
            else f"the URL names no database and libpq's default does not exist at {where}: set database.postgres.database"
        )
        fixes = (
            # Before "role": this message names the role too, which exists.
            (
                "too many connections for role",
                f'too many connections for role "{user}" at {where} (its CONNECTION LIMIT): '
                f"lower --jobs, close its other sessions, or raise it: ALTER ROLE {user} CONNECTION LIMIT n",
            ),
            (
                "too many connections for database",
                f'too many connections for database "{database}" at {where} (its CONNECTION '
                f"LIMIT): lower --jobs, close other sessions, or raise it: ALTER DATABASE {database} CONNECTION LIMIT n",
            ),
            (
                "too many clients",
                f"too many connections to PostgreSQL at {where} (max_connections): lower --jobs, or close other sessions",
            ),
            (
                "remaining connection slots are reserved",
                f"too many connections to PostgreSQL at {where} (max_connections): lower --jobs, or close other sessions",
            ),
            ("Connection refused", f"nothing answers at {where}: start PostgreSQL, or fix database.postgres host and port"),
            ("resolve host", f"unknown host in {where}: fix database.postgres.host"),
            ("translate host name", f"unknown host in {where}: fix database.postgres.host"),
            ("timeout expired", f"no answer from {where}: check the host, port and firewall"),
            (
                "password authentication failed",
                f"PostgreSQL at {where} refused user {user}: check database.postgres user and password",
            ),
            ("role", f"PostgreSQL at {where} has no user {user}: check database.postgres.user, or create the role"),
            ("pg_hba.conf", f"PostgreSQL at {where} does not let user {user} in: add a pg_hba.conf entry"),
            ("does not exist", no_database),
        )
        for marker, message in fixes:
            if marker in reason:
                return f"cannot connect to PostgreSQL: {message}"
        return f"cannot connect to PostgreSQL at {where} as {user}: {reason[:200]}"

    def namespace(self, tenant_id: str) -> str:
        return tenants.schema_name(self.template, tenant_id)

    def connection_budget(self) -> int:
        """Free connection slots under each of three limits, the fewest: the server's
        (max_connections less the reserved ones), the role's and the database's CONNECTION LIMIT
        (-1: none; superusers are exempt), each less the sessions it already counts. Less one for
        whoever else needs to connect meanwhile (an operator's psql, the application)."""
        with self.connect() as connection:
            free = [n for n in connection.execute(_FREE_CONNECTIONS).one() if n is not None]
        return max(1, int(min(free)) - 1)

    def warnings_for(self, tenant_id: str) -> Iterator[str]:
        name = self.namespace(tenant_id)
        if not tenants.docex_postgres_runtime_accepts(name):
            yield (
                f"schema {name!r} has characters other than letters, digits and '_': DocEX's PostgreSQL "
                f"runtime (2.8.7+) refuses it; prefer a tenant id with '_' instead of '-'"
            )

    def reflection_engine(self, tenant_id: str) -> Engine:
        schema = self.namespace(tenant_id)  # letters, digits, '_' and '-' only: safe in options
        return sa.create_engine(self.url, poolclass=NullPool, connect_args={"options": f"-csearch_path={schema}"})

    def _run_pg_dump(self, pg_dump: str, schema: str, *options: str) -> subprocess.CompletedProcess[str]:
        """pg_dump of exactly ``schema`` (never a case-folded or wildcard match), without owners,
        connecting as the driver does (see libpq_connection)."""
        conninfo, password = self.libpq_connection()
        env = {**os.environ, **({"PGPASSWORD": password} if password is not None else {})}  # never on the command line
        args = [pg_dump, "--no-owner", "--schema", schema_pattern(schema), "--strict-names", *options, "--dbname", conninfo]
        if self.timeouts.lock_timeout:  # its ACCESS SHARE locks could queue behind someone waiting on ours
            args += ["--lock-wait-timeout", ms(self.timeouts.lock_timeout)]
        return subprocess.run(args, env=env, capture_output=True, encoding="utf-8")

    def libpq_connection(self) -> tuple[str, str | None]:
        """What the driver connects with, for libpq's tools: a conninfo string of every libpq
        parameter SQLAlchemy derives from the URL (host, port, database, user, and sslmode and
        every other query option), without the password, which comes second."""
        _, params = self.engine.dialect.create_connect_args(self.url)
        libpq = {d.keyword.decode() for d in Conninfo.get_defaults()}
        password = params.get("password")
        kept = {k: v for k, v in params.items() if k in libpq and k != "password"}
        return make_conninfo("", **kept), None if password is None else str(password)

    def schema(self, tenant_id: str) -> str | None:
        return self.namespace(tenant_id)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

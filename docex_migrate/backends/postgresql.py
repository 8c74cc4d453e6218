"""PostgreSQL: one schema per tenant, at DocEX's ``schema_template``, in one database."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema, DropSchema

from .. import tenants
from ..config import Timeouts
from ..errors import DatabaseUnavailableError, TenantNotFoundError
from ..timestamps import timestamp
from .base import MISSING, Backend, NamespaceState

log = logging.getLogger(__name__)

VERSION_TABLE = "alembic_version"
INSUFFICIENT_PRIVILEGE = "42501"
# Namespaces read per round trip. Reading a version table takes a lock on it (and its index)
# until the transaction ends, from a pool shared by the whole server (max_locks_per_transaction
# x max_connections, 6,400 by default): so batches stay small and each is its own transaction.
BATCH_SIZE = 500

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
_pg_namespace = sa.table("pg_namespace", sa.column("oid"), sa.column("nspname"), schema="pg_catalog")
_pg_class = sa.table("pg_class", sa.column("relname"), sa.column("relnamespace"), sa.column("relkind"), schema="pg_catalog")


def driver_dump(connection: Connection, schema: str) -> str:
    """A plain SQL dump of one schema (tables and rows) for when pg_dump is not installed."""
    reflected = sa.MetaData(schema=schema)
    reflected.reflect(bind=connection)
    dialect = connection.dialect
    lines = [f"-- docex-migrate backup of schema {schema} (written through the driver)",
             str(CreateSchema(schema, if_not_exists=True).compile(dialect=dialect)) + ";"]
    for table in reflected.sorted_tables:
        lines.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip() + ";")
        for index in table.indexes:
            lines.append(str(sa.schema.CreateIndex(index).compile(dialect=dialect)) + ";")
        # Rows travel as JSON (row_to_json / json_populate_record), so every column type
        # round-trips without a literal renderer of its own.
        qualified = f"{dialect.identifier_preparer.format_table(table)}"
        rows = connection.execute(sa.select(sa.func.row_to_json(sa.literal_column("t")).cast(sa.Text)).select_from(
            table.alias("t"))).scalars()
        for row in rows:
            literal = sa.literal(row, sa.Text).compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            lines.append(f"INSERT INTO {qualified} SELECT * FROM json_populate_record(NULL::{qualified}, {literal});")
    return "\n".join(lines) + "\n"


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def scope_to(connection: Connection, schema: str) -> None:
    """Make ``schema`` the only schema unqualified names resolve to, for the current transaction.

    set_config(..., is_local => true) is SET LOCAL: it ends with the transaction, so it can never
    carry over to the next tenant even on a reused connection, and public is not searched.
    """
    quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
    connection.execute(sa.select(sa.func.set_config("search_path", quoted, True)))


def _ms(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"  # 0 disables the limit, as in PostgreSQL


def lock_tenant(connection: Connection, schema: str, timeouts: Timeouts) -> None:
    """Take the tenant's advisory lock for this transaction, then set the migration's timeouts.

    The lock is keyed on the schema name and taken before anything is read or created, so two
    runs on one tenant (two deploys, a provision racing an upgrade) go one after the other, and
    the second reads the revision the first left. Waiting for it is bounded by tenant_lock_wait;
    the migration's own statements then by lock_timeout and statement_timeout, all SET LOCAL.
    """
    set_local = lambda name, value: connection.execute(sa.select(sa.func.set_config(name, value, True)))  # noqa: E731
    set_local("lock_timeout", _ms(timeouts.tenant_lock_wait))
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(schema, 0))))
    set_local("lock_timeout", _ms(timeouts.lock_timeout))
    set_local("statement_timeout", _ms(timeouts.statement_timeout))


class PostgresBackend(Backend):
    kind = "postgresql"

    def __init__(self, url: URL, schema_template: str, timeouts: Timeouts = Timeouts()) -> None:
        tenants.validate_schema_template(schema_template)
        self.url = url
        self.template = schema_template
        self.timeouts = timeouts
        # NullPool: every tenant gets a fresh connection, so no session state (search_path
        # above all) can ever be carried from one tenant to the next.
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = sa.create_engine(self.url, poolclass=NullPool, connect_args={"connect_timeout": 10})
        return self._engine

    def describe(self) -> str:
        return f"PostgreSQL {self.url.render_as_string(hide_password=True)} schemas {self.template}"

    def where(self) -> str:
        url = self.url
        return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"

    def connect(self) -> Connection:
        try:
            return self.engine.connect()
        except DBAPIError as exc:
            raise DatabaseUnavailableError(self._explain(exc)) from None

    def _explain(self, exc: DBAPIError) -> str:
        """One line for a connection failure: where, what, and the fix. Never the password."""
        reason = " ".join(str(exc.orig or exc).split())
        where, user, database = self.where(), self.url.username or "the current user", self.url.database
        fixes = (
            # Before "role": this message names the role too, which exists.
            ("too many connections for role", f'too many connections for role "{user}" at {where} (its CONNECTION LIMIT): '
             f"lower --jobs, close its other sessions, or raise it: ALTER ROLE {user} CONNECTION LIMIT n"),
            ("too many connections for database", f'too many connections for database "{database}" at {where} (its CONNECTION '
             f"LIMIT): lower --jobs, close other sessions, or raise it: ALTER DATABASE {database} CONNECTION LIMIT n"),
            ("too many clients", f"too many connections to PostgreSQL at {where} (max_connections): lower --jobs, or close "
             "other sessions"),
            ("remaining connection slots are reserved", f"too many connections to PostgreSQL at {where} (max_connections): "
             "lower --jobs, or close other sessions"),
            ("Connection refused", f"nothing answers at {where}: start PostgreSQL, or fix database.postgres host and port"),
            ("resolve host", f"unknown host in {where}: fix database.postgres.host"),
            ("translate host name", f"unknown host in {where}: fix database.postgres.host"),
            ("timeout expired", f"no answer from {where}: check the host, port and firewall"),
            ("password authentication failed", f"PostgreSQL at {where} refused user {user}: check database.postgres user and password"),
            ("role", f"PostgreSQL at {where} has no user {user}: check database.postgres.user, or create the role"),
            ("pg_hba.conf", f"PostgreSQL at {where} does not let user {user} in: add a pg_hba.conf entry"),
            ("does not exist", f"database {database!r} does not exist at {where}: create it (createdb {database}) or fix database.postgres.database"),
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
        return max(1, min(free) - 1)

    def warnings_for(self, tenant_id: str) -> Iterator[str]:
        name = self.namespace(tenant_id)
        if not tenants.docex_postgres_runtime_accepts(name):
            yield (
                f"schema {name!r} has characters other than letters, digits and '_': DocEX's PostgreSQL "
                f"runtime (2.8.7+) refuses it; prefer a tenant id with '_' instead of '-'"
            )

    def discover(self) -> list[str]:
        query = sa.select(_pg_namespace.c.nspname).where(
            _pg_namespace.c.nspname.like(self.matcher.like_pattern(), escape="\\")
        )
        with self.connect() as connection:
            names = connection.execute(query).scalars().all()
        return sorted({t for t in map(self.tenant_of, names) if t})

    def read_states(self, tenant_ids: Iterable[str]) -> dict[str, NamespaceState]:
        by_schema = {self.namespace(t): t for t in tenant_ids}
        states = {t: MISSING for t in by_schema.values()}
        if not by_schema:
            return states
        with self.connect() as connection:
            for batch in _batches(list(by_schema), BATCH_SIZE):
                tables = sa.select(
                    _pg_namespace.c.nspname, _pg_class.c.relname
                ).select_from(
                    _pg_namespace.outerjoin(
                        _pg_class,
                        sa.and_(_pg_class.c.relnamespace == _pg_namespace.c.oid, _pg_class.c.relkind.in_(["r", "p"])),
                    )
                ).where(_pg_namespace.c.nspname.in_(batch))
                contents: dict[str, set[str]] = {}
                for schema, table in connection.execute(tables):
                    contents.setdefault(schema, set()).update([table] if table else [])
                versioned = [s for s, names in contents.items() if VERSION_TABLE in names]
                revisions: dict[str, list[str]] = {s: [] for s in versioned}
                if versioned:
                    # One UNION ALL over the version tables; SQLAlchemy quotes every schema name.
                    union = sa.union_all(*(
                        sa.select(sa.literal(s).label("schema"), sa.column("version_num"))
                        .select_from(sa.table(VERSION_TABLE, sa.column("version_num"), schema=s))
                        for s in versioned
                    ))
                    for schema, revision in connection.execute(union):
                        revisions[schema].append(revision)
                connection.rollback()  # read-only: release this batch's locks now
                for schema, names in contents.items():
                    states[by_schema[schema]] = NamespaceState(
                        exists=True,
                        versioned=VERSION_TABLE in names,
                        revisions=tuple(revisions.get(schema, ())),
                        table_count=len(names - {VERSION_TABLE}),
                    )
        return states

    @contextmanager
    def transaction(self, tenant_id: str, *, create: bool) -> Iterator[Connection]:
        schema = self.namespace(tenant_id)
        with self.connect() as connection, connection.begin():
            lock_tenant(connection, schema, self.timeouts)
            if create:
                self._create_schema(connection, schema)
            else:
                self._require(tenant_id, schema, connection)
            scope_to(connection, schema)
            yield connection

    def _create_schema(self, connection: Connection, schema: str) -> None:
        try:
            connection.execute(CreateSchema(schema, if_not_exists=True))
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
                user, database = self.url.username or "the current user", self.url.database
                raise DatabaseUnavailableError(
                    f"user {user} may not create schemas in database {database!r} at {self.where()}: "
                    f"GRANT CREATE ON DATABASE {database} TO {user}"
                ) from None
            raise

    def reflection_engine(self, tenant_id: str) -> Engine:
        schema = self.namespace(tenant_id)  # letters, digits, '_' and '-' only: safe in options
        return sa.create_engine(self.url, poolclass=NullPool, connect_args={"options": f"-csearch_path={schema}"})

    def backup(self, tenant_id: str, directory: Path) -> Path:
        """pg_dump -n when it is installed, else an SQL dump written through the driver."""
        schema = self.namespace(tenant_id)
        self._require(tenant_id, schema)
        target = directory / f"{tenant_id}-{timestamp()}.sql"
        pg_dump = shutil.which("pg_dump")
        if pg_dump and self._pg_dump(pg_dump, schema, target):
            return target
        with self.connect() as connection:
            target.write_text(driver_dump(connection, schema), encoding="utf-8")
        return target

    def _pg_dump(self, pg_dump: str, schema: str, target: Path) -> bool:
        url = self.url
        env = {**os.environ, "PGPASSWORD": url.password or ""}  # never on the command line
        args = [pg_dump, "--no-owner", "--schema", schema, "--file", str(target),
                "--host", url.host or "localhost", "--port", str(url.port or 5432), "--dbname", url.database or ""]
        if url.username:
            args += ["--username", url.username]
        done = subprocess.run(args, env=env, capture_output=True, text=True)
        if done.returncode != 0:  # e.g. pg_dump older than the server: fall back to the driver
            log.warning("pg_dump failed (%s); writing the backup through the driver", done.stderr.strip()[:200])
            target.unlink(missing_ok=True)
        return done.returncode == 0

    def drop(self, tenant_id: str) -> None:
        schema = self.namespace(tenant_id)
        with self.connect() as connection, connection.begin():
            lock_tenant(connection, schema, self.timeouts)
            self._require(tenant_id, schema, connection)
            connection.execute(DropSchema(schema, cascade=True))

    def _require(self, tenant_id: str, schema: str, connection: Connection | None = None) -> None:
        query = sa.select(sa.func.count()).select_from(_pg_namespace).where(_pg_namespace.c.nspname == schema)
        if connection is None:
            with self.connect() as own:
                found = own.execute(query).scalar()
        else:
            found = connection.execute(query).scalar()
        if not found:
            raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist (no schema {schema!r})")

    def schema(self, tenant_id: str) -> str | None:
        return self.namespace(tenant_id)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

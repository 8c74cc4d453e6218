"""SQLite: one database file per tenant, at DocEX's ``path_template``."""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from .. import tenants
from ..config import MAX_TIMEOUT_SECONDS, Timeouts
from ..errors import DatabaseUnavailableError, TenantNotFoundError
from ..timestamps import timestamp
from .base import MISSING, Backend, NamespaceState

VERSION_TABLE = "alembic_version"
# sqlite3's timeout has no "no limit" value, and one past this overflows to 0 (no waiting at all).
FOREVER = float(MAX_TIMEOUT_SECONDS)


def transactional_engine(path: str, busy_timeout: float = 5.0) -> Engine:
    """An engine whose transactions really include DDL.

    pysqlite commits implicitly before DDL, which would split a migration into pieces. As the
    SQLAlchemy pysqlite docs recommend, turn the driver's transaction handling off and emit
    BEGIN ourselves, so DDL and the alembic_version update share one transaction.
    """
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool, connect_args={"timeout": busy_timeout})

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record):  # noqa: ANN001
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection):  # noqa: ANN001
        # IMMEDIATE takes the file's write lock before anything is read: this is the per-tenant
        # lock, so two runs never read the same revision and apply the same step twice.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def read_namespace_state(path: str) -> NamespaceState:
    """Read a tenant file's version rows directly, read-only: never creates the file."""
    if not os.path.isfile(path):
        return MISSING
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True) as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revisions: tuple[str, ...] = ()
            if VERSION_TABLE in names:
                revisions = tuple(row[0] for row in db.execute(f"SELECT version_num FROM {VERSION_TABLE}"))
        db.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseUnavailableError(f"cannot read SQLite file {path!r}: {exc}") from None
    tables = {n for n in names if n != VERSION_TABLE and not n.startswith("sqlite_")}
    return NamespaceState(exists=True, versioned=VERSION_TABLE in names, revisions=revisions, table_count=len(tables))


class SqliteBackend(Backend):
    kind = "sqlite"

    def __init__(self, path_template: str, timeouts: Timeouts = Timeouts()) -> None:
        tenants.validate_path_template(path_template)
        self.template = path_template
        self.timeouts = timeouts

    def namespace(self, tenant_id: str) -> str:
        return tenants.sqlite_path(self.template, tenant_id)

    def discover(self) -> list[str]:
        paths = glob.glob(self.matcher.glob_pattern())
        return sorted({t for t in map(self.tenant_of, paths) if t and os.path.isfile(self.namespace(t))})

    def read_states(self, tenant_ids: Iterable[str]) -> dict[str, NamespaceState]:
        return {t: read_namespace_state(self.namespace(t)) for t in tenant_ids}

    @contextmanager
    def transaction(self, tenant_id: str, *, create: bool) -> Iterator[Connection]:
        path = Path(self.namespace(tenant_id))
        if not create:
            self._existing(tenant_id)
        # A provision that fails leaves at most an empty file: deleting it could pull it from under
        # a concurrent provision of the same tenant. An empty file is provisioned by the next run.
        path.parent.mkdir(parents=True, exist_ok=True)
        wait = self.timeouts.tenant_lock_wait or FOREVER
        engine = transactional_engine(str(path), busy_timeout=wait)
        try:
            with engine.connect() as connection, connection.begin():
                yield connection
        finally:
            engine.dispose()

    def install_copy(self, tenant_id: str, source: Path) -> bool:
        """Put a copy of ``source`` in place as the tenant's file, atomically and never over an
        existing file (a concurrent provision, or an empty file left by a failed one): False
        then, and the caller takes the ordinary path under the tenant's lock."""
        path = Path(self.namespace(tenant_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        shutil.copyfile(source, staged)
        try:
            os.link(staged, path)
            return True
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)

    def reflection_engine(self, tenant_id: str) -> Engine:
        return create_engine(f"sqlite:///{self._existing(tenant_id)}", poolclass=NullPool)

    def backup(self, tenant_id: str, directory: Path) -> Path:
        """SQLite's online backup API: a consistent copy even while the file is in use."""
        target = directory / f"{tenant_id}-{timestamp()}.db"
        source = sqlite3.connect(self._existing(tenant_id), timeout=self.timeouts.tenant_lock_wait or FOREVER)
        try:
            with sqlite3.connect(target) as copy:
                source.backup(copy)
            copy.close()
        finally:
            source.close()
        return target

    def drop(self, tenant_id: str) -> None:
        path = Path(self._existing(tenant_id))
        with self.transaction(tenant_id, create=False):  # wait for any run on this tenant
            pass
        for leftover in (path, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # only if empty: never anything else the directory holds
        except OSError:
            pass

    def _existing(self, tenant_id: str) -> str:
        path = self.namespace(tenant_id)
        if not os.path.isfile(path):
            raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist ({path} is missing)")
        return path

    def schema(self, tenant_id: str) -> str | None:
        return None

    def describe(self) -> str:
        return f"SQLite files {self.template}"

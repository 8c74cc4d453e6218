"""SQLite: one database file per tenant, at DocEX's ``path_template``."""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from .. import tenants
from ..chain import VERSION_TABLE, Chain
from ..config import MAX_TIMEOUT_SECONDS, Timeouts
from ..errors import DeprovisionRefusedError, TenantBusyError, TenantNotFoundError
from ..runner import migrate_tenant
from ..tempdirs import held_for_process, locked_directory
from .base import (
    MISSING,
    Backend,
    CatalogRead,
    LedgerPlace,
    NamespaceState,
    backup_failed,
    new_backup_file,
    unreadable,
)
from .fingerprints import read_sqlite_catalog

# sqlite3's timeout has no "no limit" value, and one past this overflows to 0 (no waiting at all).
FOREVER = float(MAX_TIMEOUT_SECONDS)
WAIT_SLICE = 0.5  # seconds SQLite waits for a tenant's write lock before a signal can be handled
log = logging.getLogger(__name__)


def _ms(seconds: float) -> int:
    # 0 means no limit here, as on PostgreSQL; a positive wait never rounds down to "no wait"
    return math.ceil(min(seconds or FOREVER, FOREVER) * 1000)


def transactional_engine(path: str | ContextVar[str], busy_timeout: float = 5.0, lock_timeout: float | None = None) -> Engine:
    """An engine whose transactions really include DDL, on the file ``path``, or on whichever
    file the ContextVar ``path`` names when a connection is opened (one engine for many files).

    pysqlite commits implicitly before DDL, which would split a migration into pieces. As the
    SQLAlchemy pysqlite docs recommend, turn the driver's transaction handling off and emit
    BEGIN ourselves, so DDL and the alembic_version update share one transaction.

    ``busy_timeout`` bounds the wait for the file's write lock (another writer: another run, or
    the application); once it is ours, ``lock_timeout`` bounds every later wait. The commit
    waits for the application's readers to finish, and while it waits SQLite turns new readers
    away ("database is locked"), so that wait must be short: past it the tenant rolls back and
    the application's readers resume.
    """

    def where() -> str:
        return path.get() if isinstance(path, ContextVar) else path

    # SQLite waits inside one C call, where no signal handler runs: the wait for the write lock
    # is taken in slices, so SIGINT / SIGTERM stop the run within a slice.
    first_wait = min(busy_timeout, WAIT_SLICE)
    engine = create_engine("sqlite://", poolclass=NullPool, creator=lambda: sqlite3.connect(where(), timeout=first_wait))

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # IMMEDIATE takes the file's write lock before anything is read: this is the per-tenant
        # lock, so two runs never read the same revision and apply the same step twice.
        driver: Any = connection.connection.driver_connection  # the sqlite3 connection
        deadline, told = time.monotonic() + busy_timeout, False
        while True:
            try:
                driver.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
            if time.monotonic() >= deadline:
                raise TenantBusyError(
                    f"database is locked: {where()} stayed write-locked by {_lock_holder(where())} past "
                    f"--tenant-lock-wait ({busy_timeout:g} s): retry when it is idle, or raise --tenant-lock-wait"
                )
            if not told:
                log.warning("waiting up to %g s for %s: write-locked by %s", busy_timeout, where(), _lock_holder(where()))
                told = True
        driver.execute(f"PRAGMA busy_timeout = {_ms(busy_timeout if lock_timeout is None else lock_timeout)}")

    return engine


def _lock_holder(path: str) -> str:
    """Who holds a lock on the file, from /proc/locks (Linux; SQLite's locks are POSIX locks
    on its bytes): 'pid N (its command line)', or 'another process'."""
    try:
        found = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return "another process"
    device = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] != "->" and fields[5] == device and fields[4].isdigit():
            pid = fields[4]
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                command = ""
            return f"pid {pid} ({command[:120]})" if command else f"pid {pid}"
    return "another process"


def read_namespace_state(path: str, busy_timeout: float = 5.0) -> NamespaceState:
    """Read a tenant file's version rows directly: never creates the file, never writes to it.

    The file is opened read-write (mode=rw never creates it): a hot journal left by a killed
    writer (ours or the application's) must be rolled back before the file can be read, which
    SQLite does on the first read, and a read-only open (mode=ro) cannot do. That recovery is
    what any DocEX connection would do too; no write lock is kept. A file that still cannot be
    read (corrupt, not a database, locked) is that tenant's failure alone.
    """
    if not os.path.isfile(path):
        return MISSING
    uri = Path(path).resolve().as_uri() + "?mode=rw"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
        try:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revisions: tuple[str, ...] = ()
            if VERSION_TABLE in names:
                revisions = tuple(row[0] for row in db.execute(f"SELECT version_num FROM {VERSION_TABLE}"))
        finally:
            db.close()
    except sqlite3.Error as exc:
        hint = _READ_HINTS.get(str(exc), "")
        return unreadable(f"cannot read SQLite file {path}: {exc}{hint}")
    tables = {n for n in names if n != VERSION_TABLE and not n.startswith("sqlite_")}
    return NamespaceState(exists=True, versioned=VERSION_TABLE in names, revisions=revisions, table_count=len(tables))


_READ_HINTS = {
    "file is not a database": " (restore it from a backup, or deprovision it)",
    "database disk image is malformed": " (restore it from a backup, or deprovision it)",
    "database is locked": " (another process holds it: retry when it is idle)",
    "no such column: version_num": " (its alembic_version is not Alembic's: fix or rename that table)",
}


def _backup_from(source_uri: str, tenant_id: str, target: Path) -> None:
    """Copy the database with SQLite's backup API while the caller holds the write lock, then
    check the copy: intact, the same tables and indexes, the same number of rows in each.

    The copy reads through a second, read-only connection: the backup API refuses a source
    connection in a write transaction, and the lock holder's is one (a reader may share it)."""
    try:
        source = sqlite3.connect(source_uri, uri=True)
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
            problems = [] if copy.execute("PRAGMA quick_check").fetchone()[0] == "ok" else ["the copy is damaged"]
            if _inventory(copy) != _inventory(source):
                problems.append("its tables or row counts differ from the tenant's")
        finally:
            copy.close()
            source.close()
    except OSError as exc:
        raise backup_failed(tenant_id, exc) from None
    except sqlite3.Error as exc:
        problems = [str(exc)]
    if problems:
        raise DeprovisionRefusedError(
            f"tenant {tenant_id!r}: the backup {target} does not hold what would be dropped ({'; '.join(problems)}); "
            "nothing dropped"
        )


def _inventory(db: sqlite3.Connection) -> list[tuple[str, str, str | None, int | None]]:
    """Every schema object with its SQL, and the row count of every table."""
    objects = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    return [
        (
            kind,
            name,
            sql,
            db.execute(f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchone()[0] if kind == "table" else None,
        )
        for kind, name, sql in objects
    ]


class SqliteBackend(Backend):
    kind = "sqlite"

    def __init__(self, path_template: str, timeouts: Timeouts | None = None) -> None:
        tenants.validate_path_template(path_template)
        self.template = path_template
        self.timeouts = timeouts or Timeouts()
        # One engine for every tenant's file (creating one per file cost ~0.6 ms a tenant); each
        # transaction still opens and closes its own connection on its tenant's file.
        self._file: ContextVar[str] = ContextVar("tenant_file")
        self._engine: Engine | None = None

    def namespace(self, tenant_id: str) -> str:
        return tenants.sqlite_path(self.template, tenant_id)

    def discover(self) -> list[str]:
        paths = glob.glob(self.matcher.glob_pattern())
        return sorted({t for t in map(self.tenant_of, paths) if t and os.path.isfile(self.namespace(t))})

    def read_states(self, tenant_ids: Iterable[str]) -> dict[str, NamespaceState]:
        return {t: read_namespace_state(self.namespace(t)) for t in tenant_ids}

    def read_catalogs(self, tenant_ids: Iterable[str]) -> dict[str, CatalogRead]:
        return {t: CatalogRead(*read_sqlite_catalog(self.namespace(t))) for t in tenant_ids}

    @contextmanager
    def transaction(self, tenant_id: str, *, create: bool) -> Iterator[Connection]:
        path = Path(self.namespace(tenant_id))
        if not create:
            self._existing(tenant_id)
        else:
            # A provision that fails leaves at most an empty file: deleting it could pull it from
            # under a concurrent provision of the same tenant. The next run provisions it.
            path.parent.mkdir(parents=True, exist_ok=True)
        if self._engine is None:
            wait = min(self.timeouts.tenant_lock_wait or FOREVER, FOREVER)
            self._engine = transactional_engine(self._file, busy_timeout=wait, lock_timeout=self.timeouts.lock_timeout)
        opening = self._file.set(str(path))
        try:
            with self._engine.connect() as connection, connection.begin():
                yield connection
        finally:
            self._file.reset(opening)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def with_template(self, template: str) -> SqliteBackend:
        return SqliteBackend(template, self.timeouts)

    @contextmanager
    def scratch_template(self, *, committed: bool = False) -> Iterator[str]:
        with locked_directory("docex_migrate_check_", sweep=committed) as directory:
            yield f"{directory}/t_{{tenant_id}}.db"

    def fresh_template(self, chain: Chain) -> Path:
        """The head file: a scratch file migrated to head, in a directory held for the life of
        the process (a killed process's directory is swept by the next one)."""
        directory = held_for_process("docex_migrate_template_")
        migrate_tenant(SqliteBackend(f"{directory}/{{tenant_id}}.db"), "head", chain.head, create=True, chain=chain)
        return directory / "head.db"

    def install_fresh(self, tenant_id: str, template: Path, target: str) -> bool:
        """Put a copy of the head file in place as the tenant's file, atomically and never over
        an existing file (a concurrent provision, or an empty file left by a failed one)."""
        path = Path(self.namespace(tenant_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:  # the copy itself may fail (a full disk): the staged file goes either way
            shutil.copyfile(template, staged)
            os.link(staged, path)
            return True
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)

    def review_script(self, tenant_id: str, revision: str | None, body: str) -> str:
        # SQLite has no way to raise from plain SQL but a constraint: the guard row must be true.
        guard = (
            "CREATE TEMP TABLE docex_migrate_guard (at_revision INTEGER CHECK (at_revision));\n"
            "INSERT INTO docex_migrate_guard SELECT coalesce((SELECT group_concat(version_num) FROM alembic_version) "
            f"= '{revision}', 0);\nDROP TABLE docex_migrate_guard;"
        )
        return "\n".join([
            f"-- docex-migrate upgrade --sql: tenant {tenant_id}, file {self.namespace(tenant_id)}, from {revision or 'base'}",
            f"PRAGMA busy_timeout = {_ms(self.timeouts.tenant_lock_wait)};",
            "BEGIN IMMEDIATE;",
            *([guard] if revision else []),
            body.strip(),
            "COMMIT;",
            "",
        ])  # fmt: skip

    @contextmanager
    def review_shadow(self, tenant_id: str) -> Iterator[Backend | None]:
        """A copy of the tenant's file (SQLite's backup API: consistent while in use)."""
        with locked_directory("docex_migrate_review_", sweep=True) as directory:
            shadow = SqliteBackend(f"{directory}/{{tenant_id}}.db", self.timeouts)
            source = sqlite3.connect(Path(self._existing(tenant_id)).resolve().as_uri() + "?mode=ro", uri=True)
            try:
                with sqlite3.connect(shadow.namespace(tenant_id)) as copy:
                    source.backup(copy)
                copy.close()
            finally:
                source.close()
            yield shadow

    def reflection_engine(self, tenant_id: str) -> Engine:
        return create_engine(f"sqlite:///{self._existing(tenant_id)}", poolclass=NullPool)

    def deprovision(self, tenant_id: str, backup_dir: Path | None) -> Path | None:
        """Back up and delete the file under one write lock: once it is held no other connection
        can commit, and the file is deleted before it is released, so the backup is exactly
        what is deleted. (A connection left open on the deleted file gets 'readonly database'.)"""
        path = Path(self._existing(tenant_id))
        wait = self.timeouts.tenant_lock_wait or FOREVER
        uri = path.resolve().as_uri()
        lock = sqlite3.connect(f"{uri}?mode=rw", uri=True, timeout=wait, isolation_level=None)  # never creates
        backup = None
        try:
            try:
                lock.execute("BEGIN IMMEDIATE")  # the tenant's write lock: waits for the application's writes
            except sqlite3.OperationalError as exc:
                raise DeprovisionRefusedError(
                    f"tenant {tenant_id!r} is in use: {exc} after waiting {wait:g}s; nothing dropped"
                ) from None
            if backup_dir is not None:
                backup = new_backup_file(tenant_id, backup_dir, ".db")
                _backup_from(f"{uri}?mode=ro", tenant_id, backup)
            for leftover in (path, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
        except BaseException:
            if backup is not None and path.exists():
                backup.unlink(missing_ok=True)  # the tenant is untouched: a backup would only mislead
            raise
        finally:
            lock.close()
        try:
            path.parent.rmdir()  # only if empty: never anything else the directory holds
        except OSError:
            pass
        return backup

    def _existing(self, tenant_id: str) -> str:
        path = self.namespace(tenant_id)
        if not os.path.isfile(path):
            raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist ({path} is missing)")
        return path

    def schema(self, tenant_id: str) -> str | None:
        return None

    def describe(self) -> str:
        return f"SQLite files {self.template}"

    def ledger(self) -> LedgerPlace:
        """One SQLite file in the template's fixed directory (tenants.ledger_file), in WAL mode
        with synchronous=NORMAL: a commit survives a killed process without an fsync per row."""
        path = tenants.ledger_file(self.template)

        def engine(write: bool) -> Engine:
            if not write:
                # Never creates the file (mode=rw), reads while a run writes (WAL), writes nothing;
                # read-write only so that, as the last connection, it removes the -wal and -shm files.
                uri = Path(path).resolve().as_uri()
                return create_engine(
                    "sqlite://", poolclass=NullPool, creator=lambda: sqlite3.connect(f"{uri}?mode=rw", uri=True, timeout=30.0)
                )
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            created = transactional_engine(path, busy_timeout=30.0)

            @event.listens_for(created, "connect")
            def _wal(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute("PRAGMA journal_mode = WAL")
                dbapi_connection.execute("PRAGMA synchronous = NORMAL")

            return created

        return LedgerPlace(None, path, f"SQLite {os.path.abspath(self.template)}", lambda: os.path.isfile(path), engine)

"""SQLite: one database file per tenant, at DocEX's ``path_template``."""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import math
import os
import shutil
import sqlite3
import struct
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from .. import tenants
from ..chain import VERSION_TABLE, Chain
from ..config import MAX_TIMEOUT_SECONDS, Timeouts
from ..errors import DeprovisionRefusedError, TenantBusyError, TenantNotFoundError, UnsupportedStepError
from ..runner import migrate_tenant
from ..tempdirs import held_for_process, locked_directory
from .base import (
    ENDING_REFUSED,
    MISSING,
    Backend,
    CatalogRead,
    LedgerPlace,
    NamespaceState,
    backup_failed,
    discard_backup,
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


# statx(2) (glibc 2.28+), for a file's birth time, which os.stat does not give on Linux.
_AT_FDCWD, _STATX_BTIME, _STATX_SIZE, _BTIME_OFFSET = -100, 0x800, 256, 80


@functools.cache
def _statx() -> Any:
    return getattr(ctypes.CDLL(None, use_errno=True), "statx", None) if sys.platform == "linux" else None


def _birth_time(path: str, st: os.stat_result) -> str:
    """When the file was created, to the nanosecond where the system says ('-' where not)."""
    born = getattr(st, "st_birthtime", None)  # macOS, the BSDs
    if born is not None:
        return repr(born)
    statx = _statx()
    buffer = ctypes.create_string_buffer(_STATX_SIZE)
    if statx is None or statx(_AT_FDCWD, os.fsencode(path), 0, _STATX_BTIME, buffer) != 0:
        return "-"
    if not int.from_bytes(buffer.raw[:4], sys.byteorder) & _STATX_BTIME:  # this filesystem keeps none
        return "-"
    seconds, nanoseconds = struct.unpack_from("=qI", buffer.raw, _BTIME_OFFSET)
    return f"{seconds}.{nanoseconds:09d}"


def file_identity(path: str) -> str | None:
    """Which file is at ``path``, not which name: its device and inode, and its birth time, since
    a file deleted and created again often gets the deleted one's inode back (ext4 does). Where
    the filesystem keeps no birth time, device and inode alone. None: no file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{_birth_time(path, st)}"


# Opening a file for reading, most useful first: read-write (rolls back a hot journal, removes
# WAL's -wal and -shm as the last connection), read-only (the file or its directory is not
# ours to write, while a writer may be active: WAL's -shm exists or can be made), and immutable:
# storage nobody can write (a read-only mount), where a WAL database left no -shm to share and
# none can be made. A lock or a damaged file is not retried: that error is the answer.
_READING_MODES = ("mode=rw", "mode=ro", "mode=ro&immutable=1")
_CANNOT_WRITE = ("unable to open database file", "attempt to write a readonly database")


def connect_for_reading(path: str, timeout: float) -> sqlite3.Connection:
    """A connection that reads ``path`` and never creates it, on writable and read-only storage."""
    uri = Path(path).resolve().as_uri()
    for mode in _READING_MODES:
        db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=timeout)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the open is lazy: read to know
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if str(exc) not in _CANNOT_WRITE or mode == _READING_MODES[-1]:
                raise
    raise AssertionError("unreachable")


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

    The file is opened read-write where it can be (mode=rw never creates it): a hot journal left
    by a killed writer (ours or the application's) must be rolled back before the file can be
    read, which SQLite does on the first read, and a read-only open (mode=ro) cannot do. That
    recovery is what any DocEX connection would do too; no write lock is kept. On read-only
    storage it is read read-only (connect_for_reading). A file that still cannot be read
    (corrupt, not a database, locked) is that tenant's failure alone.
    """
    if not os.path.isfile(path):
        return MISSING
    try:
        db = connect_for_reading(path, busy_timeout)
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
    return NamespaceState(
        exists=True,
        versioned=VERSION_TABLE in names,
        revisions=revisions,
        table_count=len(tables),
        identity=file_identity(path),
    )


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


def _open_in_wal_mode_elsewhere(uri: str) -> bool:
    """Whether another connection, of any process or user, has the WAL-mode file open (False
    for a file in rollback-journal mode). Every open WAL connection holds a shared lock on the
    file, and a connection in exclusive locking mode must take the file's exclusive lock to
    read it: a read that is refused at once means someone else has the file open."""
    probe = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
    try:
        probe.execute("PRAGMA locking_mode = EXCLUSIVE")
        probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return False
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return True
        raise
    finally:
        probe.close()


def processes_with_open(path: Path, *, ours: int = 0) -> list[int]:
    """The ids of the processes that have ``path`` open (this one: past ``ours`` descriptors
    of its own), as Linux lists them in /proc: every process to root, one's own user's
    otherwise; elsewhere none are seen. A connection in rollback-journal mode holds no lock
    while idle, so an open descriptor is the only sign of it."""
    target = path.stat()
    found = []
    for descriptors in glob.glob("/proc/[0-9]*/fd"):
        pid = int(descriptors.split("/")[2])
        try:
            entries = os.listdir(descriptors)
        except OSError:
            continue  # ended, or another user's
        count = 0
        for entry in entries:
            try:
                opened = os.stat(f"{descriptors}/{entry}")
            except OSError:
                continue
            count += (opened.st_dev, opened.st_ino) == (target.st_dev, target.st_ino)
        if count > (ours if pid == os.getpid() else 0):
            found.append(pid)
    return found


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


@contextmanager
def _kept_open(connection: Connection) -> Iterator[None]:
    """Keep the tenant's transaction open until docex-migrate ends it. SQLite itself refuses a
    statement that would end it (COMMIT, END, ROLLBACK in any spelling, in SQL or through the
    driver's commit() and rollback()): its authorizer is asked as each statement is compiled,
    before anything runs, so nothing of the revision is ever committed early. Savepoints are
    allowed. A statement after the transaction ended anyway (SQLite rolls back by itself on some
    errors, e.g. a full disk) is refused too: it would be committed on its own."""
    driver: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
    refused: list[str] = []

    def authorize(action: int, detail: str | None, *_: Any) -> int:
        if action == sqlite3.SQLITE_TRANSACTION:
            refused.append(detail or "")
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def before_cursor_execute(*_: Any) -> None:
        if not driver.in_transaction:
            raise UnsupportedStepError(ENDING_REFUSED)

    driver.set_authorizer(authorize)
    event.listen(connection, "before_cursor_execute", before_cursor_execute)
    try:
        yield
    except Exception:
        if refused:  # SQLite's own "not authorized", whatever the revision made of it
            raise UnsupportedStepError(ENDING_REFUSED) from None
        raise
    finally:
        driver.set_authorizer(None)  # our COMMIT (or ROLLBACK) follows
        event.remove(connection, "before_cursor_execute", before_cursor_execute)


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
            with self._engine.connect() as connection, connection.begin(), _kept_open(connection):
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

    def install_fresh(self, tenant_id: str, template: Path, target: str) -> str | None:
        """Put a copy of the head file in place as the tenant's file, atomically and never over
        an existing file (a concurrent provision, or an empty file left by a failed one)."""
        path = Path(self.namespace(tenant_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:  # the copy itself may fail (a full disk): the staged file goes either way
            shutil.copyfile(template, staged)
            os.link(staged, path)
            return file_identity(str(path))
        except FileExistsError:
            return None
        finally:
            staged.unlink(missing_ok=True)

    def review_script(self, tenant_id: str, revision: str | None, body: str, *, versioned: bool) -> str:
        # For the sqlite3 shell: without `.bail on` it reports an error and goes on with the next
        # statement (and COMMITs); with it, it exits non-zero and the open transaction is lost.
        # SQLite has no way to raise from plain SQL but a constraint: the guard row must be true.
        stale = f"tenant {tenant_id} is no longer at {revision or 'base'}: render the script again"
        if versioned:
            as_rendered = f"coalesce((SELECT group_concat(version_num) FROM {VERSION_TABLE}), '') = '{revision or ''}'"
        else:
            as_rendered = f"NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{VERSION_TABLE}')"
        return "\n".join([
            f"-- docex-migrate upgrade --sql: tenant {tenant_id}, file {self.namespace(tenant_id)}, from {revision or 'base'}",
            f"-- Run it with the sqlite3 shell (the script makes it stop at the first error): sqlite3 {self.namespace(tenant_id)} < {tenant_id}.sql",
            ".bail on",
            f".timeout {_ms(self.timeouts.tenant_lock_wait)}",
            "BEGIN IMMEDIATE;",
            f".timeout {_ms(self.timeouts.lock_timeout)}",  # the write lock is ours: later waits are short
            # SQLite's error names the failing constraint: the name is the message
            f'CREATE TEMP TABLE docex_migrate_guard (as_rendered INTEGER NOT NULL CONSTRAINT "{stale}" CHECK (as_rendered));',
            f"INSERT INTO docex_migrate_guard SELECT {as_rendered};",
            "DROP TABLE docex_migrate_guard;",
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
        what is deleted. Refused while another connection has the file open: in WAL mode it
        would go on committing into the deleted file, its writes acknowledged and lost."""
        path = Path(self._existing(tenant_id))
        lock = self._sole_write_lock(tenant_id, path)
        backup = None
        try:
            if backup_dir is not None:
                backup = new_backup_file(tenant_id, backup_dir, ".db")
                _backup_from(f"{path.resolve().as_uri()}?mode=ro", tenant_id, backup)
            for leftover in (path, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
        except BaseException:
            if path.exists():
                discard_backup(backup)
            raise
        finally:
            lock.close()
        try:
            path.parent.rmdir()  # only if empty: never anything else the directory holds
        except OSError:
            pass
        return backup

    def _sole_write_lock(self, tenant_id: str, path: Path) -> sqlite3.Connection:
        """A connection holding the file's write lock (waiting up to tenant_lock_wait for the
        application's writes) while no other connection has the file open (waiting up to
        lock_timeout for them to close); else DeprovisionRefusedError."""
        wait = self.timeouts.tenant_lock_wait or FOREVER
        deadline = time.monotonic() + (self.timeouts.lock_timeout or FOREVER)
        uri = path.resolve().as_uri() + "?mode=rw"  # never creates
        while True:
            # Before our own connection exists: in WAL mode it would hold the file open itself.
            wal_elsewhere = _open_in_wal_mode_elsewhere(uri)
            lock = sqlite3.connect(uri, uri=True, timeout=wait, isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")  # the tenant's write lock: waits for the application's writes
                processes = processes_with_open(path, ours=1)
            except BaseException as exc:
                lock.close()
                if isinstance(exc, sqlite3.OperationalError):
                    raise DeprovisionRefusedError(
                        f"tenant {tenant_id!r} is in use: {exc} after waiting {wait:g}s; nothing dropped"
                    ) from None
                raise
            if not wal_elsewhere and not processes:
                return lock
            lock.close()
            if time.monotonic() >= deadline:
                which = f" (process {', '.join(map(str, processes))})" if processes else ""
                raise DeprovisionRefusedError(
                    f"tenant {tenant_id!r} is in use: another connection has {path} open{which} after waiting "
                    f"{self.timeouts.lock_timeout:g}s (--lock-timeout); close the application's connections "
                    "to the tenant and retry; nothing dropped"
                )
            time.sleep(0.2)

    def _existing(self, tenant_id: str) -> str:
        path = self.namespace(tenant_id)
        if not os.path.isfile(path):
            raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist ({path} is missing)")
        return path

    def schema(self, tenant_id: str) -> str | None:
        return None

    def identity(self, tenant_id: str, connection: Connection) -> str | None:
        return file_identity(self.namespace(tenant_id))

    def describe(self) -> str:
        return f"SQLite files {self.template}"

    def ledger(self) -> LedgerPlace:
        """One SQLite file in the template's fixed directory (tenants.ledger_file), in WAL mode
        with synchronous=NORMAL: a commit survives a killed process without an fsync per row."""
        path = tenants.ledger_file(self.template)
        wait = self.ledger_lock_wait

        def explain_wait(exc: BaseException) -> str | None:
            if not isinstance(exc, (TenantBusyError, OperationalError)) or "locked" not in str(exc):
                return None
            return (
                f"the run ledger {path} stayed locked by another process (its write lock) past {wait:g}s: "
                "retry when the run writing it has finished"
            )

        def engine(write: bool) -> Engine:
            if not write:
                # Never creates the file, reads while a run writes (WAL), writes nothing, and reads
                # read-only storage too (connect_for_reading).
                return create_engine("sqlite://", poolclass=NullPool, creator=lambda: connect_for_reading(path, wait))
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            created = transactional_engine(path, busy_timeout=wait)

            @event.listens_for(created, "connect")
            def _wal(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute("PRAGMA journal_mode = WAL")
                dbapi_connection.execute("PRAGMA synchronous = NORMAL")

            return created

        # The fleet is the storage as resolved (symbolic links followed): one directory however it is reached.
        fleet, spelled = f"SQLite {os.path.realpath(self.template)}", f"SQLite {os.path.abspath(self.template)}"
        aliases = (spelled,) if spelled != fleet else ()
        return LedgerPlace(None, path, fleet, lambda: os.path.isfile(path), engine, explain_wait, aliases)

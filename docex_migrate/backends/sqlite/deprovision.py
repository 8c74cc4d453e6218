"""SQLite: deprovisioning a tenant. Its file backed up with SQLite's backup API and checked, then
deleted, under one write lock, and only while no other connection has it open."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ...config import Timeouts
from ...errors import DeprovisionRefusedError
from ..base import backup_failed, discard_backup, new_backup_file
from .files import processes_with_open
from .transactions import FOREVER


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


def deprovision_file(tenant_id: str, path: Path, backup_dir: Path | None, timeouts: Timeouts) -> Path | None:
    """Back up and delete the file under one write lock: once it is held no other connection
    can commit, and the file is deleted before it is released, so the backup is exactly
    what is deleted. Refused while another connection has the file open: in WAL mode it
    would go on committing into the deleted file, its writes acknowledged and lost."""
    lock = _sole_write_lock(tenant_id, path, timeouts)
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


def _sole_write_lock(tenant_id: str, path: Path, timeouts: Timeouts) -> sqlite3.Connection:
    """A connection holding the file's write lock (waiting up to tenant_lock_wait for the
    application's writes) while no other connection has the file open (waiting up to
    lock_timeout for them to close); else DeprovisionRefusedError."""
    wait = timeouts.tenant_lock_wait or FOREVER
    deadline = time.monotonic() + (timeouts.lock_timeout or FOREVER)
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
                f"{timeouts.lock_timeout:g}s (--lock-timeout); close the application's connections "
                "to the tenant and retry; nothing dropped"
            )
        time.sleep(0.2)

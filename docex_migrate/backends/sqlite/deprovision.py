"""SQLite: deprovisioning a tenant. Its file backed up with SQLite's backup API and checked, then
deleted, under one exclusive lock, and only while no other connection has it open. Its directory
goes too, once staged files a killed restore or provision left in it are removed (staging.py),
if nothing else is there."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from ...config import Timeouts
from ...errors import DeprovisionRefusedError
from ...interrupts import hold
from ..base import backup_failed, discard_backup, new_backup_file
from .files import processes_with_open
from .staging import sweep
from .transactions import FOREVER

_HEADER_SIZE = 100  # SQLite's database header: its magic string, page size, change counter, schema


def _backup_from(lock: sqlite3.Connection, tenant_id: str, target: Path) -> None:
    """Copy the database with SQLite's backup API through the connection holding the file's
    exclusive lock (no other connection, not even one of this process, may read it now), then
    check the copy: intact, the same tables and indexes, the same number of rows in each."""
    try:
        copy = sqlite3.connect(target)
        try:
            lock.backup(copy)
            problems = [] if copy.execute("PRAGMA quick_check").fetchone()[0] == "ok" else ["the copy is damaged"]
            if _inventory(copy) != _inventory(lock):
                problems.append("its tables or row counts differ from the tenant's")
        finally:
            copy.close()
    except OSError as exc:
        raise backup_failed(tenant_id, exc, target.parent) from None
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


def _in_wal_mode(path: Path) -> bool:
    """Whether the file is in WAL mode, from its header (read and write versions 2)."""
    with path.open("rb") as file:
        return file.read(20)[18:20] == b"\x02\x02"


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
    """Back up and delete the file under one exclusive lock: while it is held no other
    connection can read or write the file, so the backup is exactly what is deleted. Refused
    while another connection has the file open: in WAL mode it would go on committing into the
    deleted file, its writes acknowledged and lost."""
    lock = _sole_exclusive_lock(tenant_id, path, timeouts)
    backup = None
    deleted = None
    try:
        if backup_dir is not None:
            backup = new_backup_file(tenant_id, backup_dir, ".db")
            _backup_from(lock, tenant_id, backup)
        hold()  # the deletion is the commit: a signal from here on no longer stops it (interrupts.py)
        deleted = _delete_unreachable(tenant_id, path)
    except BaseException:
        if path.exists():
            discard_backup(backup)
        raise
    finally:
        lock.close()
        if deleted is not None:
            deleted.close()  # only now: closing any descriptor of the file drops this process's locks on it
    sweep(path)  # staged files a killed restore or provision left: they would keep the directory
    try:
        path.parent.rmdir()  # only if empty: never anything else the directory holds (kept_by_deprovision names it)
    except OSError:
        pass
    return backup


def _delete_unreachable(tenant_id: str, path: Path) -> BinaryIO:
    """Delete the file, still exclusively locked, so that no write to it is ever acknowledged
    and lost. A connection that opened the file while it was being backed up waits for the lock;
    once it is released, it would read the deleted file and (in WAL mode, without an error)
    commit into it. So the file is first renamed aside, where no one can open it any more, and
    deleted only if no other process has it open (as /proc shows them); else it is put back and
    deprovision refused. Its header is then wiped through a descriptor returned open (closing
    it would release the lock): a connection /proc did not show (another user's) reads "file is
    not a database", and the application sees its write fail."""
    aside = path.with_name(f".{path.name}.deprovisioning-{uuid.uuid4().hex}")
    os.rename(path, aside)
    try:
        processes = processes_with_open(aside, ours=1)
        if processes:
            raise DeprovisionRefusedError(
                f"tenant {tenant_id!r} is in use: another connection opened {path} while it was being backed up "
                f"(process {', '.join(map(str, processes))}); retry when the application's connections to the "
                "tenant are closed; nothing dropped"
            )
        deleted = open(aside, "r+b")  # closed by the caller once the lock is released
    except BaseException:
        _put_back(aside, path)
        raise
    deleted.write(bytes(_HEADER_SIZE))
    deleted.flush()
    for name in (aside, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
        name.unlink(missing_ok=True)
    return deleted


def _put_back(aside: Path, path: Path) -> None:
    """The file renamed aside back under its name, never over a file created there meanwhile."""
    try:
        os.link(aside, path)
    except FileExistsError:
        raise DeprovisionRefusedError(
            f"a new file was created at {path} while deprovision had the tenant's file aside: the tenant's "
            f"file is kept as {aside}; nothing dropped"
        ) from None
    aside.unlink()


def _sole_exclusive_lock(tenant_id: str, path: Path, timeouts: Timeouts) -> sqlite3.Connection:
    """A connection holding the file's exclusive lock (waiting up to tenant_lock_wait for the
    application's reads and writes), kept until it is closed, while no other connection has the
    file open (waiting up to lock_timeout for them to close); else DeprovisionRefusedError.

    In exclusive locking mode SQLite releases no lock it took until the connection is closed,
    and a WAL-mode file is read without its shared memory: no other connection can read it."""
    wait = timeouts.tenant_lock_wait or FOREVER
    deadline = time.monotonic() + (timeouts.lock_timeout or FOREVER)
    uri = path.resolve().as_uri() + "?mode=rw"  # never creates
    while True:
        # Before our own connection exists: in WAL mode it would hold the file open itself. A
        # file open elsewhere in WAL mode would keep the exclusive lock from us: not waited for.
        if _open_in_wal_mode_elsewhere(uri):
            processes = processes_with_open(path)
        else:
            lock = sqlite3.connect(uri, uri=True, timeout=wait, isolation_level=None)
            try:
                wal = _in_wal_mode(path)
                if wal:  # before the first read: WAL then goes without shared memory
                    lock.execute("PRAGMA locking_mode = EXCLUSIVE")
                lock.execute("BEGIN EXCLUSIVE")  # waits for the application's readers and writers
                # In rollback-journal mode only now: a shared lock taken while waiting would be
                # kept, and the application's commit we wait for could never finish.
                lock.execute("PRAGMA locking_mode = EXCLUSIVE")
                if (lock.execute("PRAGMA journal_mode").fetchone()[0] == "wal") != wal:
                    lock.close()  # its journal mode changed meanwhile: again
                    continue
                lock.execute("COMMIT")  # the lock stays; the backup API needs a source not in a write transaction
                lock.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nothing left to write into the file when it closes
                processes = processes_with_open(path, ours=1)
            except BaseException as exc:
                lock.close()
                if isinstance(exc, sqlite3.OperationalError):
                    raise DeprovisionRefusedError(
                        f"tenant {tenant_id!r} is in use: {exc} after waiting {wait:g}s; nothing dropped"
                    ) from None
                raise
            if not processes:
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

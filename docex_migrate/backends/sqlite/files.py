"""SQLite: a tenant's file as a file. Which file it is (file_identity: not which name), opening it
for reading on writable and read-only storage alike (connect_for_reading, with the hints its
errors get: READ_HINTS), its state read without Alembic, and who holds it open or locked."""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import sqlite3
import struct
import sys
from pathlib import Path
from typing import Any

from ...chain import VERSION_TABLE
from ..base import MISSING, NamespaceState, unreadable
from ..fingerprints import SQLITE_OBJECTS, sqlite_hash

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


READ_HINTS = {
    "file is not a database": " (restore it from a backup, or deprovision it)",
    "database disk image is malformed": " (restore it from a backup, or deprovision it)",
    "database is locked": " (another process holds it: retry when it is idle)",
    "no such column: version_num": " (its alembic_version is not Alembic's: fix or rename that table)",
}


def lock_holder(path: str) -> str:
    """Who holds a lock on the file, from /proc/locks (Linux; SQLite's locks are POSIX locks
    on its bytes): 'pid N (its command line)', or 'another process'. Never this process: the
    one asking holds a shared lock itself while it waits for the write lock."""
    try:
        found = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return "another process"
    device = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    for line in text.splitlines():
        fields = line.split()
        mine = fields[4] == str(os.getpid()) if len(fields) >= 5 else False
        if len(fields) >= 6 and fields[1] != "->" and fields[5] == device and fields[4].isdigit() and not mine:
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
        hint = READ_HINTS.get(str(exc), "")
        return unreadable(f"cannot read SQLite file {path}: {exc}{hint}")
    tables = {n for n in names if n != VERSION_TABLE and not n.startswith("sqlite_")}
    return NamespaceState(
        exists=True,
        versioned=VERSION_TABLE in names,
        revisions=revisions,
        table_count=len(tables),
        identity=file_identity(path),
    )


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


def read_sqlite_catalog(path: str, busy_timeout: float = 5.0) -> tuple[NamespaceState, str | None]:
    """A tenant file's state (as read_namespace_state reads it) and its catalog fingerprint,
    read in one read transaction. Never creates the file and never writes to it: opened as
    status opens it (connect_for_reading: read-write where it can, so that a hot journal left by
    a killed writer is rolled back, as any reader does; read-only storage read-only). A file that
    cannot be read is that tenant's failure alone."""
    if not os.path.isfile(path):
        return MISSING, None
    try:
        db = connect_for_reading(path, busy_timeout)
        db.isolation_level = None  # the BEGIN below is ours
        try:
            db.execute("BEGIN")  # deferred: a shared read lock only, so both reads see one state
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revisions: tuple[str, ...] = ()
            if VERSION_TABLE in names:
                revisions = tuple(row[0] for row in db.execute(f"SELECT version_num FROM {VERSION_TABLE}"))
            objects = db.execute(SQLITE_OBJECTS, (VERSION_TABLE,)).fetchall()
            db.execute("COMMIT")
        finally:
            db.close()
    except sqlite3.Error as exc:
        hint = READ_HINTS.get(str(exc), "")
        return unreadable(f"cannot read SQLite file {path}: {exc}{hint}"), None
    tables = {n for n in names if n != VERSION_TABLE and not n.startswith("sqlite_")}
    state = NamespaceState(exists=True, versioned=VERSION_TABLE in names, revisions=revisions, table_count=len(tables))
    return state, sqlite_hash(objects)

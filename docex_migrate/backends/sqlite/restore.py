"""SQLite: restoring a deprovisioned tenant's file from its backup (the copy deprovision wrote
with SQLite's backup API). Copied beside the tenant's path under a temporary name, checked
(intact, at the recorded revision), then linked into place only if nothing is there: the
tenant's file appears whole or not at all. The staged copy is private (0600) from its creation and
held while in use (staging.py): one a killed restore left is removed by the next restore,
provision or deprovision of the tenant."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from ...chain import VERSION_TABLE
from ...errors import RestoreRefusedError
from ...interrupts import hold
from ..base import copy_hashing
from .files import file_identity
from .staging import link_into_place, staged_beside, sweep


def _traces(path: Path) -> list[Path]:
    """What of a tenant's file is there: the file, or a journal, WAL or shared memory file that
    SQLite would apply to (or read with) a file put at ``path``."""
    return [p for p in (path, *(Path(f"{path}{s}") for s in ("-journal", "-wal", "-shm"))) if os.path.lexists(p)]


def _check(tenant_id: str, staged: Path, backup: Path, revision: str | None) -> None:
    """The copy is an intact SQLite database whose version rows say ``revision``."""
    try:
        db = sqlite3.connect(staged.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None)
        try:
            problems = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
            versioned = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)).fetchone()
            found = tuple(r[0] for r in db.execute(f"SELECT version_num FROM {VERSION_TABLE}")) if versioned else ()
        finally:
            db.close()
    except sqlite3.Error as exc:
        problems, found = [str(exc)], ()
    if problems:
        raise RestoreRefusedError(
            f"tenant {tenant_id!r}: backup {backup} is not an intact SQLite database ({'; '.join(problems[:3])}); nothing restored"
        )
    if found != ((revision,) if revision else ()):
        raise RestoreRefusedError(
            f"tenant {tenant_id!r}: backup {backup} is at revision {', '.join(found) or 'base'}, not {revision or 'base'} "
            "as its deprovision recorded; nothing restored"
        )


def restore_file(tenant_id: str, path: Path, backup: Path, revision: str | None, sha256: str) -> str | None:
    """Put a checked copy of ``backup`` at ``path``, never over anything there; its identity.
    Staged files a killed restore or provision left beside it are removed first (staging.py)."""
    found = _traces(path)
    if found:
        raise RestoreRefusedError(
            f"tenant {tenant_id!r} exists ({found[0]} is there): restore never overwrites a tenant; "
            "deprovision it first if it must be replaced; nothing restored"
        )
    sweep(path)
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with staged_beside(path, "restoring") as (staged, fd):  # private (0600) until it is in place
            return _put_in_place(tenant_id, path, staged, fd, backup, revision, sha256)
    except BaseException:
        for directory in created:  # the directories made for it, innermost first, if still empty
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _put_in_place(
    tenant_id: str, path: Path, staged: Path, fd: int, backup: Path, revision: str | None, sha256: str
) -> str | None:
    try:
        with backup.open("rb") as source, open(os.dup(fd), "wb") as target:
            copied = copy_hashing(source, target)
            target.flush()
            os.fsync(target.fileno())
    except OSError as exc:
        raise RestoreRefusedError(
            f"tenant {tenant_id!r}: cannot copy backup {backup} to {staged.parent} ({exc.strerror or exc}); nothing restored"
        ) from None
    if copied != sha256:  # what is put in place is the backup recorded, byte for byte
        raise RestoreRefusedError(f"tenant {tenant_id!r}: backup {backup} changed while it was copied; nothing restored")
    _check(tenant_id, staged, backup, revision)
    hold()  # the link is the commit: a signal from here on no longer undoes it (interrupts.py)
    try:
        link_into_place(staged, fd, path)  # never over a file created meanwhile (a provision)
    except FileExistsError:
        raise RestoreRefusedError(f"tenant {tenant_id!r} was created meanwhile ({path}); nothing restored") from None
    return file_identity(str(path))

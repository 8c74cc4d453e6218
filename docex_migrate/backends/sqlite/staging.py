"""SQLite: a file staged beside a tenant's path before it is linked into place (restore's checked
copy of a backup, provision's copy of the head file), and what a killed run left of one.

A staged file is created private (0600, O_EXCL) and held by an flock on it for as long as it is
in use; the operating system drops the lock when its holder dies, however it dies (kill -9
included), so a staged file no one holds is one a dead process left: ``sweep`` removes it, and
the journal, WAL and shared-memory files SQLite made beside it. Nothing else is ever removed: a
file deprovision set aside (``.NAME.deprovisioning-*``: the tenant's own file, its deletion
interrupted) is not a staged file, nor is anything a name does not mark as one of ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

_SIDE_FILES = ("-journal", "-wal", "-shm")
_KINDS = ("restoring", "provisioning")


def _pattern(path: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(path.name)}\.(?:{'|'.join(_KINDS)})-[0-9a-f]{{32}}((?:{'|'.join(_SIDE_FILES)})?)")


@functools.cache
def new_file_mode() -> int:
    """The mode a new file of this process gets (0666 less the umask), as a provisioned tenant's
    file always had. The umask is read once, by setting a stricter one for an instant: a file
    another thread creates meanwhile is only ever more private."""
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def staged_beside(path: Path, kind: str) -> Iterator[tuple[Path, int]]:
    """A new empty file beside ``path`` (``.NAME.KIND-UUID``), 0600 from its creation, held by
    an flock until the block ends, then removed with SQLite's files beside it; its name and a
    descriptor open on it for reading and writing."""
    assert kind in _KINDS
    while True:
        staged = path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex}")
        fd = os.open(staged, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.stat(staged, follow_symlinks=False), os.fstat(fd)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # swept between its creation and our lock (it was not held yet): another name
    try:
        yield staged, fd
    finally:
        try:
            for leftover in (*(Path(f"{staged}{s}") for s in _SIDE_FILES), staged):  # the staged file last: it holds the lock
                leftover.unlink(missing_ok=True)
        finally:
            os.close(fd)  # only now: closing drops this process's SQLite locks on the file too


def link_into_place(staged: Path, fd: int, path: Path) -> None:
    """``staged`` linked at ``path`` (FileExistsError when something is there: never over it),
    then given the mode a new file gets (it was private while staged)."""
    os.link(staged, path)
    os.fchmod(fd, new_file_mode())


def sweep(path: Path) -> list[Path]:
    """Remove the staged files beside ``path`` that no live process holds (and SQLite's files
    beside them); return what was removed. A name that looks like ours but is not a regular file,
    cannot be opened (another user's), or is held, is left alone."""
    pattern = _pattern(path)
    try:
        names = sorted(os.listdir(path.parent))
    except OSError:
        return []
    found = [(name, match[1]) for name in names if (match := pattern.fullmatch(name))]
    mains = {name for name, side in found if not side}
    removed = []
    for name in sorted(mains):
        removed.extend(_removed_if_abandoned(path.parent / name))
    for name, side in found:  # a side file whose staged file is gone: its owner is done with it
        if side and name[: -len(side)] not in mains:
            removed.extend(_unlinked(path.parent / name))
    return removed


def _removed_if_abandoned(staged: Path) -> list[Path]:
    """``staged`` and SQLite's files beside it, removed if no live process holds it: its flock
    is taken, and kept until they are gone (a process that created it and has not locked it
    yet then finds its name gone, and takes another)."""
    try:
        st = os.lstat(staged)
        if not stat.S_ISREG(st.st_mode):
            return []
        if st.st_nlink > 1:
            # Linked into place already (killed before it removed this name): its owner is done
            # with it, and the name is only a second name of the tenant's file. Not opened: closing
            # a descriptor of the tenant's file would drop this process's SQLite locks on it.
            return _unlinked(staged)
        fd = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # gone meanwhile, or not ours to judge
        return []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.fstat(fd), os.stat(staged, follow_symlinks=False)):
            return []
    except OSError:  # held by a live process (or gone meanwhile)
        os.close(fd)
        return []
    try:
        return [*(p for s in _SIDE_FILES for p in _unlinked(Path(f"{staged}{s}"))), *_unlinked(staged)]
    finally:
        os.close(fd)


def _unlinked(name: Path) -> list[Path]:
    try:
        name.unlink()
    except OSError:
        return []
    return [name]


def strangers(path: Path) -> list[str]:
    """What deprovision of the tenant at ``path`` keeps in its directory, as warnings: every
    file there but the tenant's own (and SQLite's files beside it) and staged files (swept, or
    still in use; a look-alike that is not a regular file is named). A file a killed deprovision set aside (the tenant's earlier file, its data) is
    never removed either."""
    pattern, folder = _pattern(path), path.parent.absolute()
    ours = {path.name, *(f"{path.name}{s}" for s in _SIDE_FILES)}
    try:
        names = sorted(os.listdir(path.parent))
    except OSError:
        return []
    aside = re.compile(rf"\.{re.escape(path.name)}\.deprovisioning-[0-9a-f]{{32}}")
    staged = {n for n in names if pattern.fullmatch(n) and os.path.isfile(folder / n) and not os.path.islink(folder / n)}
    others = [n for n in names if n not in ours and n not in staged and not aside.fullmatch(n)]
    found = [
        f"{folder / n} is kept: a tenant file a killed deprovision set aside (its data: remove it once you no longer need it)"
        for n in names
        if aside.fullmatch(n)
    ]
    if others:
        found.append(
            f"{folder} is kept: it holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}, which "
            "docex-migrate does not know as its own (remove them, then the directory, if they are not needed)"
        )
    return found

"""Temporary directories that a later run can tell apart from abandoned ones.

A directory is held by an flock on its ``.lock`` file for as long as it is in use; the
operating system drops the lock when the holder dies, however it dies (kill -9 included), so
"lockable" means "abandoned" and the next run removes it.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

LOCK_FILE = ".lock"
PREFIX = "docex_migrate_"  # every scratch directory's prefix starts with it
MIN_AGE = 60.0  # seconds: a younger directory may still be taking its lock

_PROCESS = ExitStack()  # directories held for the life of the process
atexit.register(_PROCESS.close)


@contextmanager
def locked_directory(prefix: str, *, sweep: bool = False) -> Iterator[Path]:
    """A new temporary directory, held until the block ends, then removed. ``sweep`` first
    removes this prefix's directories that no live process holds."""
    if sweep:
        sweep_directories(prefix)
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    fd = os.open(directory / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        os.close(fd)


def held_for_process(prefix: str) -> Path:
    """A locked directory that lives until the process exits (abandoned ones swept first)."""
    return _PROCESS.enter_context(locked_directory(prefix, sweep=True))


def sweep_abandoned() -> list[Path]:
    """Remove every scratch directory a killed process left (copies of tenant files among
    them): each command does this first, not only the one that made them."""
    return sweep_directories(PREFIX)


def sweep_directories(prefix: str) -> list[Path]:
    """Remove this prefix's temporary directories left by killed processes; return them."""
    removed = []
    for directory in Path(tempfile.gettempdir()).glob(prefix + "*"):
        try:
            if not directory.is_dir() or time.time() - directory.stat().st_mtime < MIN_AGE:
                continue
            fd = os.open(directory / LOCK_FILE, os.O_RDWR)
        except OSError:  # gone meanwhile, or not ours to judge (no lock file): leave it
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live process holds it
        finally:
            os.close(fd)  # closing drops our own flock too: removal needs no lock
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed

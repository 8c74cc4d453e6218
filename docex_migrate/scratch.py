"""Scratch namespaces for the checks and for what is derived from the chain: beside the real
tenants, never mistaken for them, removed afterwards — and, when a killed run could not remove
them, removed by a later run once nothing holds them any more.

Who holds what: a scratch directory is held by an flock on its ``.lock`` file, a set of scratch
schemas by a session advisory lock on its prefix. Both are released by the operating system or
the server when the holder dies, however it dies, so "lockable" means "abandoned".
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .backends import Backend, backend_for
from .config import Settings, SqliteSettings
from .errors import DocexMigrateError
from .snapshot import snapshot

log = logging.getLogger(__name__)

SCHEMA_PREFIX = "dxcheck_"
_SCHEMA_SET = re.compile(r"dxcheck_[0-9a-f]{8}_")
LOCK_FILE = ".lock"
MIN_AGE = 60.0  # seconds: younger leftovers may still be taking their lock


@contextmanager
def locked_directory(prefix: str, *, sweep: bool = False) -> Iterator[Path]:
    """A new temporary directory, held (flock) until the block ends, then removed. ``sweep``
    first removes this prefix's directories that no live process holds."""
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


def _set_key(prefix: str) -> sa.ColumnElement:
    return sa.func.hashtextextended(prefix, 0)


def sweep_schemas(connection: Connection) -> list[str]:
    """Drop the scratch schemas whose set no live session holds; return their names."""
    names = connection.execute(
        sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p ESCAPE '\\'"),
        {"p": SCHEMA_PREFIX.replace("_", "\\_") + "%"},
    ).scalars().all()
    connection.commit()
    dropped: list[str] = []
    for prefix in sorted({m.group(0) for m in map(_SCHEMA_SET.match, names) if m}):
        held_elsewhere = not connection.execute(sa.select(sa.func.pg_try_advisory_lock(_set_key(prefix)))).scalar()
        connection.commit()
        if held_elsewhere:
            continue  # its run is still going
        members = [n for n in names if n.startswith(prefix)]
        try:
            for name in members:
                connection.execute(sa.schema.DropSchema(name, cascade=True, if_exists=True))
            connection.commit()
            dropped += members
        except sa.exc.DBAPIError as exc:  # e.g. another role's leftovers: not ours to drop
            connection.rollback()
            log.info("cannot remove scratch schemas %s*: %s", prefix, exc.orig)
        finally:
            connection.execute(sa.select(sa.func.pg_advisory_unlock(_set_key(prefix))))
            connection.commit()
    return dropped


@contextmanager
def scratch_settings(settings: Settings, *, committed: bool = False) -> Iterator[Settings]:
    """Settings like ``settings`` but whose tenants live in scratch namespaces.

    SQLite: files in a temporary directory. PostgreSQL: schemas ``dxcheck_<random>_<tenant>`` in
    the configured database, all dropped at the end (the configured schema_template never
    matches them, so the real fleet never sees them).

    ``committed``: the caller commits scratch schemas (the checks, autogenerate), so a set is
    held by an advisory lock for as long as it lives, and abandoned sets are swept first.
    Callers that only work in transactions they roll back leave nothing behind and pass False:
    they neither sweep nor hold a lock (so a reading command never drops anything).
    """
    if settings.postgres is None:
        with locked_directory("docex_migrate_check_", sweep=committed) as directory:
            yield replace(settings, sqlite=SqliteSettings(path_template=f"{directory}/t_{{tenant_id}}.db"))
        return
    prefix = f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:8]}_"
    scratch = replace(settings, postgres=replace(settings.postgres, schema_template=prefix + "{tenant_id}"))
    backend = backend_for(scratch)
    holder = _hold(backend, prefix) if committed else None
    try:
        yield scratch
    finally:
        try:
            _drop_set(backend, prefix)
        finally:
            if holder is not None:
                holder.close()  # ends the session: its advisory lock goes with it
            backend.dispose()


def _hold(backend: Backend, prefix: str) -> Connection | None:
    """A session that holds the set's advisory lock; it sweeps abandoned sets first. None when
    the database cannot be reached: then nothing can be created either (the checks say why)."""
    try:
        holder = backend.connect()
    except DocexMigrateError:
        return None
    try:
        dropped = sweep_schemas(holder)
        if dropped:
            log.info("removed %d scratch schema(s) left by killed runs", len(dropped))
        holder.execute(sa.select(sa.func.pg_advisory_lock(_set_key(prefix))))
        holder.commit()
    except Exception:
        holder.close()
        raise
    return holder


def _drop_set(backend: Backend, prefix: str) -> None:
    try:
        connection = backend.connect()
    except DocexMigrateError:  # could not connect: nothing was created either
        return
    with connection, connection.begin():
        names = connection.execute(
            sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p ESCAPE '\\'"),
            {"p": prefix.replace("_", "\\_") + "%"},
        ).scalars().all()
        for name in names:
            connection.execute(sa.schema.DropSchema(name, cascade=True))


def namespace_snapshot(backend: Backend, tenant_id: str) -> dict:
    engine = backend.reflection_engine(tenant_id)
    try:
        with engine.connect() as connection:
            return snapshot(connection, backend.schema(tenant_id))
    finally:
        engine.dispose()

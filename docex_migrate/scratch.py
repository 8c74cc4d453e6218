"""Scratch namespaces for the checks: beside the real tenants, never mistaken for them, always
removed afterwards."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import sqlalchemy as sa

from .backends import Backend, backend_for
from .config import Settings, SqliteSettings
from .errors import DocexMigrateError
from .snapshot import snapshot


@contextmanager
def scratch_settings(settings: Settings) -> Iterator[Settings]:
    """Settings like ``settings`` but whose tenants live in scratch namespaces.

    SQLite: files in a temporary directory. PostgreSQL: schemas ``dxcheck_<random>_<tenant>`` in
    the configured database, all dropped at the end (the configured schema_template never
    matches them, so the real fleet never sees them).
    """
    if settings.postgres is None:
        directory = tempfile.mkdtemp(prefix="docex_migrate_check_")
        try:
            yield replace(settings, sqlite=SqliteSettings(path_template=f"{directory}/t_{{tenant_id}}.db"))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    prefix = f"dxcheck_{uuid.uuid4().hex[:8]}_"
    scratch = replace(settings, postgres=replace(settings.postgres, schema_template=prefix + "{tenant_id}"))
    try:
        yield scratch
    finally:
        backend = backend_for(scratch)
        try:
            connection = backend.connect()
        except DocexMigrateError:  # could not connect: nothing was created either
            return
        try:
            with connection, connection.begin():
                names = connection.execute(
                    sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p ESCAPE '\\'"),
                    {"p": prefix.replace("_", "\\_") + "%"},
                ).scalars().all()
                for name in names:
                    connection.execute(sa.schema.DropSchema(name, cascade=True))
        finally:
            backend.dispose()


def namespace_snapshot(backend: Backend, tenant_id: str) -> dict:
    engine = backend.reflection_engine(tenant_id)
    try:
        with engine.connect() as connection:
            return snapshot(connection, backend.schema(tenant_id))
    finally:
        engine.dispose()

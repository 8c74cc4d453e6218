"""Backends: where tenant namespaces live (SQLite files or PostgreSQL schemas)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..config import Settings
from .base import MISSING, Backend, FreshTemplate, LedgerPlace, NamespaceState, unreadable
from .postgresql import PostgresBackend
from .sqlite import SqliteBackend

__all__ = [
    "MISSING",
    "Backend",
    "FreshTemplate",
    "LedgerPlace",
    "NamespaceState",
    "PostgresBackend",
    "SqliteBackend",
    "backend_for",
    "open_backend",
    "unreadable",
]


def backend_for(settings: Settings) -> Backend:
    if settings.postgres is not None:
        return PostgresBackend(settings.postgres.url, settings.postgres.schema_template, settings.timeouts)
    return SqliteBackend(settings.sqlite.path_template, settings.timeouts)


@contextmanager
def open_backend(settings: Settings) -> Iterator[Backend]:
    """The configured backend, disposed of at the end of the block."""
    backend = backend_for(settings)
    try:
        yield backend
    finally:
        backend.dispose()

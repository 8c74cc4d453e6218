"""Backends: where tenant namespaces live (SQLite files or PostgreSQL schemas), one package per
database (sqlite/, postgresql/) behind base.Backend. They import only the vocabulary below them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..config import Settings
from .base import MISSING, Backend, FreshTemplate, HeadDump, LedgerPlace, NamespaceState, unreadable
from .sqlite import SqliteBackend

if TYPE_CHECKING:
    from .postgresql import PostgresBackend

__all__ = [
    "MISSING",
    "Backend",
    "FreshTemplate",
    "HeadDump",
    "LedgerPlace",
    "NamespaceState",
    "PostgresBackend",
    "SqliteBackend",
    "backend_for",
    "open_backend",
    "unreadable",
]


def __getattr__(name: str) -> Any:
    # PostgreSQL's backend (psycopg and all) is imported when first used: a SQLite run, and each
    # of its --jobs workers, starts without it.
    if name == "PostgresBackend":
        from .postgresql import PostgresBackend

        return PostgresBackend
    raise AttributeError(name)


def backend_for(settings: Settings) -> Backend:
    if settings.postgres is not None:
        from .postgresql import PostgresBackend

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

"""Backends: where tenant namespaces live (SQLite files or PostgreSQL schemas)."""

from __future__ import annotations

from ..config import Settings
from .base import MISSING, Backend, NamespaceState, unreadable
from .postgresql import PostgresBackend
from .sqlite import SqliteBackend

__all__ = ["MISSING", "Backend", "NamespaceState", "PostgresBackend", "SqliteBackend", "backend_for", "unreadable"]


def backend_for(settings: Settings) -> Backend:
    if settings.postgres is not None:
        return PostgresBackend(settings.postgres.url, settings.postgres.schema_template, settings.timeouts)
    return SqliteBackend(settings.sqlite.path_template, settings.timeouts)

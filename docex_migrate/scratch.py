"""Scratch tenants for the checks and for what is derived from the chain: beside the real
tenants, never mistaken for them, removed afterwards (the backend decides where; see
Backend.scratch_template)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .backends import Backend, open_backend
from .config import Settings
from .snapshot import snapshot


@contextmanager
def scratch_settings(settings: Settings, *, committed: bool = False) -> Iterator[Settings]:
    """Settings like ``settings`` but whose tenants live in scratch namespaces, removed at the end.

    ``committed``: the caller commits scratch namespaces (the checks, autogenerate), so they are
    held by a lock while in use and abandoned ones are swept first. Callers that only work in
    transactions they roll back leave nothing behind and pass False: they neither sweep nor
    hold a lock, so a reading command never drops anything.
    """
    with open_backend(settings) as backend, backend.scratch_template(committed=committed) as template:
        yield settings.with_template(template)


def namespace_snapshot(backend: Backend, tenant_id: str) -> dict[str, Any]:
    engine = backend.reflection_engine(tenant_id)
    try:
        with engine.connect() as connection:
            return snapshot(connection, backend.schema(tenant_id))
    finally:
        engine.dispose()

"""For a project's own tests of the chain with Alembic's usual tools (pytest-alembic): an Alembic
Config for the chain, and a scratch tenant to run it on, removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic.config import Config
from sqlalchemy.engine import Engine

from .backends import open_backend
from .chain import alembic_config
from .config import Settings, load_settings
from .scratch import scratch_settings

SCRATCH_TENANT = "pytest_alembic"


def chain_config(tenant_id: str = SCRATCH_TENANT) -> Config:
    """The chain's Alembic Config (``$DOCEX_MIGRATE_SCRIPT_LOCATION`` honoured), with the tenant
    id revisions read from ``config.attributes``."""
    return alembic_config(tenant_id=tenant_id)


@contextmanager
def scratch_tenant_engine(settings: Settings | None = None, tenant_id: str = SCRATCH_TENANT) -> Iterator[Engine]:
    """An engine on a new, empty tenant namespace of the configured database (a scratch one,
    beside the real tenants and never one of them), whose default schema is the tenant's: hand
    it to a tool that runs env.py on an engine of its own. Removed with everything in it at the end."""
    with scratch_settings(settings or load_settings(), committed=True) as scratch, open_backend(scratch) as backend:
        with backend.transaction(tenant_id, create=True):
            pass  # creates the namespace
        engine = backend.reflection_engine(tenant_id)
        try:
            yield engine
        finally:
            engine.dispose()

"""pytest-alembic's fixtures for this chain: its env.py run on a scratch tenant of the
configured DocEX database ($DOCEX_CONFIG, $DOCEX_DATABASE_URL, ~/.docex/config.yaml or the
SQLite default), created empty for each test and removed afterwards."""

import pytest

from docex_migrate.testing import chain_config, scratch_tenant_engine


@pytest.fixture
def alembic_config():
    return chain_config()


@pytest.fixture
def alembic_engine():
    with scratch_tenant_engine() as engine:
        yield engine

"""pytest-alembic's built-in tests (and its experimental downgrade_leaves_no_trace) against our
env.py, through the conftest beside this file (the one README.md shows), on both backends."""

import pytest
from pytest_alembic.tests import (  # noqa: F401 - collected by pytest
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from pytest_alembic.tests.experimental import test_downgrade_leaves_no_trace  # noqa: F401


@pytest.fixture(autouse=True)
def configured_database(env):
    """The DocEX configuration the conftest reads: a SQLite file tree, or the run's PostgreSQL
    database (tests/conftest.py's ``env``, which sets $DOCEX_CONFIG)."""
    return env

"""Alembic environment for the DocEX tenant schema: one run migrates one tenant namespace.

The logic lives in docex_migrate/environment.py, so that every revision folder (this one, and
the small test chains under tests/chains/) runs exactly the same environment. Revisions never
name a schema: on PostgreSQL the connection's search_path is the tenant's schema alone, for that
transaction only, and alembic_version is kept inside that schema.
"""

from docex_migrate.environment import run

run()

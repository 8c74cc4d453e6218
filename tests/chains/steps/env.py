"""A small test chain run by the same environment as the real one (docex_migrate.environment)."""

from docex_migrate.environment import run

run()

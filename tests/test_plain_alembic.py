"""The plain Alembic path (env.py), used the way Alembic's own tools use it: the CLI's
autogenerate on one tenant, and several commands on one Config from Python code."""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import main as alembic_main
from helpers import head, version_of

from docex_migrate.chain import alembic_config, load_chain, script_location

ROOT = Path(__file__).resolve().parents[1]


def _cli(env, tmp_path, *args: str) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text((ROOT / "alembic.ini").read_text().replace("%(here)s/alembic", str(script_location())))
    alembic_main(["-c", str(ini), "-x", f"config={env.config_file}", "-x", "tenant=acme", *args])


def test_autogenerate_on_a_tenant_at_head_proposes_nothing(env, chain_copy, tmp_path):
    """On PostgreSQL the tenant's schema is both version_table_schema and the connection's default
    schema: Alembic found alembic_version there again and proposed op.drop_table('alembic_version')."""
    _cli(env, tmp_path, "upgrade", "head")
    before = set((chain_copy / "versions").iterdir())
    _cli(env, tmp_path, "revision", "--autogenerate", "-m", "probe")
    (written,) = set((chain_copy / "versions").iterdir()) - before
    commands = [line.strip() for line in written.read_text().splitlines() if line.strip().startswith("op.")]
    assert commands == []


def test_two_commands_on_one_config(env):
    """Python code reusing one Config (as pytest-alembic does): the second command found the
    first one's connection, closed, in config.attributes."""
    config = alembic_config()
    config.cmd_opts = argparse.Namespace(x=[f"config={env.config_file}", "tenant=acme"])
    below = load_chain().order[-2]
    command.upgrade(config, "head")
    command.downgrade(config, below)
    assert version_of(env, "acme") == (below,)
    command.upgrade(config, "head")
    assert version_of(env, "acme") == (head(),)
    assert not {"connection", "tenant_id", "version_table_schema"} & set(config.attributes)


def test_the_authors_page_shows_the_pytest_alembic_conftest_as_it_is():
    conftest = (ROOT / "tests" / "pytest_alembic" / "conftest.py").read_text()
    assert f"```python\n{conftest}```\n" in (ROOT / "docs" / "authors.md").read_text()

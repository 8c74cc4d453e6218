"""What a revision can reach, the same whether docex-migrate drives the migration (one
MigrationContext per tenant, no env.py) or the plain Alembic CLI runs env.py: the tenant id, its
connection and its version table's schema, through ``op.get_context().config.attributes``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.config import main as alembic_main
from helpers import tenant_engine

from docex_migrate import api

ROOT = Path(__file__).resolve().parents[1]

WHOAMI = '''"""whoami: records what the revision sees of its run

Revision ID: whoami
Revises: s7_docex_2_9_10
"""
import sqlalchemy as sa
from alembic import context, op

revision = "whoami"
down_revision = "s7_docex_2_9_10"
branch_labels = None
depends_on = None
replayable = False  # it reads the tenant id: fresh tenants must run it themselves


def upgrade() -> None:
    attributes = op.get_context().config.attributes
    table = op.create_table("whoami", sa.Column("tenant", sa.Text), sa.Column("schema", sa.Text), sa.Column("bind", sa.Text))
    same = op.get_bind() is attributes["connection"] and context.get_context() is op.get_context()
    op.bulk_insert(table, [{"tenant": attributes["tenant_id"], "schema": str(attributes["version_table_schema"]), "bind": str(same)}])


def downgrade() -> None:
    op.drop_table("whoami")
'''


def _seen(env, tenant_id: str) -> tuple[str, str, str]:
    engine = tenant_engine(env, tenant_id)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text("SELECT tenant, schema, bind FROM whoami")).one())
    finally:
        engine.dispose()


def test_a_revision_reaches_the_tenant_id_and_config_attributes(env, chain_copy, tmp_path):
    api.provision(env.settings, ["upgraded"])  # at s7, before the revision exists
    (chain_copy / "versions" / "whoami.py").write_text(WHOAMI)
    (result,) = api.upgrade(env.settings, ["upgraded"])
    assert result.action == "upgraded"
    (result,) = api.provision(env.settings, ["provisioned"])  # replayable = False: the chain runs for it
    assert result.action == "provisioned"
    ini = tmp_path / "alembic.ini"
    ini.write_text((ROOT / "alembic.ini").read_text().replace("%(here)s/alembic", str(chain_copy)))
    alembic_main(["-c", str(ini), "-x", f"config={env.config_file}", "-x", "tenant=by_cli", "upgrade", "head"])
    schema = "None" if env.kind == "sqlite" else None
    for tenant in ("upgraded", "provisioned", "by_cli"):
        assert _seen(env, tenant) == (tenant, schema or env.namespace(tenant), "True")

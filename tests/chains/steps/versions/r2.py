"""step 2: can pause or fail after its DDL (see ../README.md)

Revision ID: r2
Revises: r1
"""

import os
import time
from pathlib import Path

import sqlalchemy as sa

from alembic import op

revision = "r2"
down_revision = "r1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("t2", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO applied (step) VALUES ('r2')")
    tenant_id = _pause()
    if tenant_id and tenant_id in os.environ.get("STEPS_FAIL_TENANT", "").split(","):
        raise RuntimeError(f"step 2 fails for {tenant_id} on purpose")


def downgrade() -> None:
    op.execute("DELETE FROM applied WHERE step = 'r2'")
    op.drop_table("t2")
    _pause()


def _pause() -> object:
    """Name the tenant in STEPS_MARKER, then sleep STEPS_SLEEP seconds (for STEPS_SLEEP_TENANT only, if set)."""
    tenant_id = op.get_context().config.attributes.get("tenant_id")
    if os.environ.get("STEPS_MARKER"):
        Path(os.environ["STEPS_MARKER"]).write_text(str(tenant_id))
    if os.environ.get("STEPS_SLEEP_TENANT", tenant_id) == tenant_id:
        time.sleep(float(os.environ.get("STEPS_SLEEP", "0")))
    return tenant_id

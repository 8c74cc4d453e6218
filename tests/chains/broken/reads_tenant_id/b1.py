"""seeds a basket named after the tenant, without declaring replayable = False

Revision ID: b1
Revises: HEAD_REVISION
"""

import sqlalchemy as sa
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tenant_id = op.get_context().config.attributes.get("tenant_id", "offline")
    op.execute(
        sa.text(
            "INSERT INTO docbasket (id, name, storage_config, status, created_at, updated_at) "
            "VALUES ('inbox', :name, '{}', 'active', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        ).bindparams(name=f"{tenant_id} inbox")
    )


def downgrade() -> None:
    op.execute("DELETE FROM docbasket WHERE id = 'inbox'")

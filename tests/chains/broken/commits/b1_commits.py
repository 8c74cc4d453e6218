"""ends the tenant's transaction with its own COMMIT

Revision ID: b1
Revises: HEAD_REVISION
"""
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE committed_early (x int)")
    op.execute("-- done\nCOMMIT")


def downgrade() -> None:
    op.execute("DROP TABLE committed_early")

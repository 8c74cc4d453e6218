"""runs raw SQL only PostgreSQL understands

Revision ID: b1
Revises: HEAD_REVISION
"""
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT pg_sleep(0)")


def downgrade() -> None:
    pass

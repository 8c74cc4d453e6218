"""runs raw SQL only PostgreSQL understands

Revision ID: b1
Revises: s7_docex_2_9_10
"""
from alembic import op

revision = "b1"
down_revision = "s7_docex_2_9_10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT pg_sleep(0)")


def downgrade() -> None:
    pass

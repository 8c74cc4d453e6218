"""a table for b2 (clean)

Revision ID: b1
Revises: HEAD_REVISION
"""
import sqlalchemy as sa
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None
squawk_ignore = {"prefer-bigint-over-int": "test fixture", "prefer-identity": "test fixture"}


def upgrade() -> None:
    op.create_table("labels", sa.Column("x", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("labels")

"""step 1

Revision ID: r1
Revises:
"""
import sqlalchemy as sa

from alembic import op

revision = "r1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("applied", sa.Column("step", sa.String(10), nullable=False))
    op.create_table("t1", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO applied (step) VALUES ('r1')")


def downgrade() -> None:
    op.drop_table("t1")
    op.drop_table("applied")

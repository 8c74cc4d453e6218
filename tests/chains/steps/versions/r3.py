"""step 3

Revision ID: r3
Revises: r2
"""
import sqlalchemy as sa

from alembic import op

revision = "r3"
down_revision = "r2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("t3", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO applied (step) VALUES ('r3')")


def downgrade() -> None:
    op.execute("DELETE FROM applied WHERE step = 'r3'")
    op.drop_table("t3")

"""adds a table of the application's own

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
    op.create_table("basket_note", sa.Column("id", sa.Integer, primary_key=True), sa.Column("note", sa.Text))


def downgrade() -> None:
    op.drop_table("basket_note")

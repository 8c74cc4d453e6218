"""drops that table again, rows and all; its downgrade brings back an empty table

Revision ID: b2
Revises: b1
"""

import sqlalchemy as sa
from alembic import op

revision = "b2"
down_revision = "b1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("basket_note")


def downgrade() -> None:
    op.create_table("basket_note", sa.Column("id", sa.Integer, primary_key=True), sa.Column("note", sa.Text))

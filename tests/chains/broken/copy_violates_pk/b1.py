"""copies a column that holds duplicates into a new table's primary key

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
    op.create_table("basket_status", sa.Column("status", sa.String(50), primary_key=True), sa.Column("name", sa.String(255)))
    op.execute("INSERT INTO basket_status (status, name) SELECT status, name FROM docbasket")


def downgrade() -> None:
    op.drop_table("basket_status")

"""a new column made NOT NULL without a backfill: fine on an empty tenant only

Revision ID: b1
Revises: HEAD_REVISION
"""

import sqlalchemy as sa

from docex_migrate.revision_tools import batch_alter_table

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None
squawk_ignore = {"adding-not-nullable-field": "test fixture"}


def upgrade() -> None:
    with batch_alter_table("processors") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
    with batch_alter_table("processors") as batch:
        batch.alter_column("owner", existing_type=sa.String(64), nullable=False)


def downgrade() -> None:
    with batch_alter_table("processors") as batch:
        batch.drop_column("owner")

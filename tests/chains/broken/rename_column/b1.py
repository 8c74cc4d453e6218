"""renames a DocEX column (schema.py updated, squawk opted out): DocEX can no longer read it

Revision ID: b1
Revises: HEAD_REVISION
"""

import sqlalchemy as sa
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None
squawk_ignore = {"renaming-column": "test fixture: the application reads summary now"}


def upgrade() -> None:
    op.alter_column("docbasket", "description", new_column_name="summary", existing_type=sa.Text())


def downgrade() -> None:
    op.alter_column("docbasket", "summary", new_column_name="description", existing_type=sa.Text())

"""legitimate: adds a column, then batch-alters it in the same revision (renders with --sql)

Revision ID: b1
Revises: HEAD_REVISION
"""
import sqlalchemy as sa
from alembic import op

from docex_migrate import revision_tools

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("docbasket", sa.Column("owner", sa.String(64), nullable=True))
    with revision_tools.batch_alter_table("docbasket") as batch:
        batch.alter_column("owner", existing_type=sa.String(64), type_=sa.String(128))


def downgrade() -> None:
    with revision_tools.batch_alter_table("docbasket") as batch:
        batch.drop_column("owner")

"""a unique index over a column that holds duplicates in a populated tenant

Revision ID: b1
Revises: HEAD_REVISION
"""

from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None
squawk_ignore = {"require-concurrent-index-creation": "test fixture"}


def upgrade() -> None:
    op.create_index("uq_docbasket_description", "docbasket", ["description"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_docbasket_description", table_name="docbasket")

"""adds an index, and its downgrade forgets to drop it

Revision ID: b1
Revises: HEAD_REVISION
"""
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None
squawk_ignore = {"require-concurrent-index-creation": "test fixture: the table is empty"}


def upgrade() -> None:
    op.create_index("idx_docbasket_description", "docbasket", ["description"])


def downgrade() -> None:
    pass  # forgot: op.drop_index("idx_docbasket_description", table_name="docbasket")

"""deletes the events of no document; its downgrade cannot bring them back

Revision ID: b1
Revises: HEAD_REVISION
"""

from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM doc_events WHERE document_id IS NULL")


def downgrade() -> None:
    pass

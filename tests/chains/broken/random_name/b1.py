"""names an index at random: every tenant gets another name

Revision ID: b1
Revises: HEAD_REVISION
"""

import uuid

from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(f"idx_docbasket_{uuid.uuid4().hex[:8]}", "docbasket", ["description"])


def downgrade() -> None:
    pass  # cannot know the name

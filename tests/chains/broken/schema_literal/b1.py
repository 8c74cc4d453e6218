"""names a schema (on a path that does not run, so only the static check can see it)

Revision ID: b1
Revises: HEAD_REVISION
"""
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None
CLEANUP_OLD_TABLE = False


def upgrade() -> None:
    if CLEANUP_OLD_TABLE:
        op.drop_table("legacy", schema="public")


def downgrade() -> None:
    pass

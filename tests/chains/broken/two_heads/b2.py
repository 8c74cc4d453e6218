"""the other head

Revision ID: b2
Revises: HEAD_REVISION
"""
revision = "b2"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

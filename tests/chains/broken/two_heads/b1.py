"""one of two heads

Revision ID: b1
Revises: HEAD_REVISION
"""
revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

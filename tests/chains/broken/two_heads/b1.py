"""one of two heads

Revision ID: b1
Revises: s7_docex_2_9_10
"""
revision = "b1"
down_revision = "s7_docex_2_9_10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

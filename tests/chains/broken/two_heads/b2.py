"""the other head

Revision ID: b2
Revises: s7_docex_2_9_10
"""
revision = "b2"
down_revision = "s7_docex_2_9_10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

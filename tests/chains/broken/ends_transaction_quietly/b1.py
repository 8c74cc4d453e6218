"""ends the tenant's transaction and hides the refusal (END, then the driver's own commit)

Revision ID: b1
Revises: HEAD_REVISION
"""
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE committed_early (x int)")
    try:
        op.execute("END")
    except Exception:
        pass
    op.get_bind().connection.driver_connection.commit()


def downgrade() -> None:
    op.execute("DROP TABLE committed_early")

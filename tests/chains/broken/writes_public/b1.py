"""writes outside the tenant through a name the source pass cannot read (PostgreSQL: a table
and a row in public; SQLite: a temp table, gone with the connection)

Revision ID: b1
Revises: HEAD_REVISION
"""
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None
SHARED = "pub" + "lic"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE TABLE IF NOT EXISTS {SHARED}.leak (x int)")
        op.execute(f"INSERT INTO {SHARED}.leak VALUES (1)")
    else:
        op.execute("CREATE TEMP TABLE IF NOT EXISTS leak (x int)")
        op.execute("INSERT INTO leak VALUES (1)")


def downgrade() -> None:
    pass

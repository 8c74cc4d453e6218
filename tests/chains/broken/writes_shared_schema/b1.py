"""writes into a shared schema of its own naming (PostgreSQL: a schema it creates, and rows into
an existing table docex_shared.audit; SQLite: an attached database)

Revision ID: b1
Revises: HEAD_REVISION
"""
from alembic import op

revision = "b1"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None
SHARED = "docex_shared"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {SHARED}_new")
        op.execute(f"CREATE TABLE IF NOT EXISTS {SHARED}_new.audit (tenant text)")
        op.execute(f"INSERT INTO {SHARED}.audit VALUES (current_schema())")
    else:
        op.execute(f"ATTACH DATABASE ':memory:' AS {SHARED}")
        op.execute(f"CREATE TABLE {SHARED}.audit (tenant text)")
        op.execute(f"INSERT INTO {SHARED}.audit VALUES ('x')")


def downgrade() -> None:
    pass

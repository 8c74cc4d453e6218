"""adds a CHECK constraint, a view and a trigger (with its function), written idempotently, and
whose downgrade forgets them all

Revision ID: b2
Revises: b1
"""
from alembic import op

revision = "b2"
down_revision = "b1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE labels DROP CONSTRAINT IF EXISTS ck_labels_positive")
        op.execute("ALTER TABLE labels ADD CONSTRAINT ck_labels_positive CHECK (x > 0)")
        op.execute("CREATE OR REPLACE VIEW basket_names AS SELECT name FROM docbasket")
        op.execute("CREATE OR REPLACE FUNCTION labels_touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
        op.execute("CREATE OR REPLACE TRIGGER labels_touch BEFORE INSERT ON labels FOR EACH ROW EXECUTE FUNCTION labels_touch()")
    else:
        op.execute("DROP TABLE IF EXISTS labels_new")
        op.execute("CREATE TABLE labels_new (x INTEGER NOT NULL PRIMARY KEY, CONSTRAINT ck_labels_positive CHECK (x > 0))")
        op.execute("INSERT INTO labels_new SELECT x FROM labels")
        op.execute("DROP TABLE labels")
        op.execute("ALTER TABLE labels_new RENAME TO labels")
        op.execute("CREATE VIEW IF NOT EXISTS basket_names AS SELECT name FROM docbasket")
        op.execute("CREATE TRIGGER IF NOT EXISTS labels_touch AFTER INSERT ON labels BEGIN SELECT 1; END")


def downgrade() -> None:
    pass

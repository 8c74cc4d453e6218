"""S7 (DocEX 2.9.10): four path columns widened from VARCHAR(255) to TEXT.

document.source, document.path, file_history.original_path and file_history.internal_path.
DocEX 2.9.10 ships this only as a psql script to run by hand in each PostgreSQL tenant schema,
and nothing for SQLite; here it reaches every tenant on both backends.

On PostgreSQL VARCHAR -> TEXT is a catalog-only change. On SQLite batch mode rebuilds the two
tables; SQLite's reflection loses the DESC of an index column, so the DESC indexes of the
rebuilt table are dropped first and created again afterwards, exactly as schema.sql has them.
The downgrade fails, and changes nothing, if a value is longer than 255 characters: it refuses
to truncate paths.

Revision ID: s7_docex_2_9_10
Revises: s6_docex_2_8_8
"""

import sqlalchemy as sa

from alembic import op
from docex_migrate.revision_tools import batch_alter_table, dialect_name

revision = "s7_docex_2_9_10"
down_revision = "s6_docex_2_8_8"
branch_labels = None
depends_on = None

COLUMNS = {
    "document": (("source", False), ("path", False)),
    "file_history": (("original_path", True), ("internal_path", True)),
}
DESC_INDEXES = {
    "document": (
        ("idx_document_basket_created", "created_at"),
        ("idx_document_basket_updated", "updated_at"),
    ),
}


def _change_types(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    rebuilds = dialect_name() == "sqlite"
    for table, columns in COLUMNS.items():
        desc_indexes = DESC_INDEXES.get(table, ()) if rebuilds else ()
        for name, _ in desc_indexes:
            op.drop_index(name, table_name=table)
        with batch_alter_table(table) as batch:
            for column, nullable in columns:
                batch.alter_column(column, existing_type=old, existing_nullable=nullable, type_=new)
        for name, column in desc_indexes:
            op.create_index(name, table, ["basket_id", sa.column(column).desc()])


def upgrade() -> None:
    _change_types(sa.String(255), sa.Text())


def downgrade() -> None:
    _change_types(sa.Text(), sa.String(255))

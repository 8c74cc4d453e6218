"""S6 (DocEX 2.8.8 - 2.9.9): document_metadata.coordination_id, and two indexes narrowed.

The new column is nullable with no default (PostgreSQL UUID, SQLite CHAR(32)). It is appended
at the end of the table: column order is not part of the schema DocEX relies on, and putting
it in the middle would mean rewriting the whole table on PostgreSQL.
idx_document_metadata_key_value (key, value) -> (key) and idx_document_metadata_doc_key_value
(document_id, key, value) -> (document_id, key) keep their names; DocEX's IF NOT EXISTS never
replaced them, this revision does.

Revision ID: s6_docex_2_8_8
Revises: s5_docex_2_8_4
"""

import sqlalchemy as sa

from alembic import op
from docex_migrate.revision_tools import batch_alter_table

revision = "s6_docex_2_8_8"
down_revision = "s5_docex_2_8_4"
branch_labels = None
depends_on = None

TABLE = "document_metadata"


def _indexes(key_value: list[str], doc_key_value: list[str]) -> None:
    op.drop_index("idx_document_metadata_key_value", table_name=TABLE)
    op.drop_index("idx_document_metadata_doc_key_value", table_name=TABLE)
    op.create_index("idx_document_metadata_key_value", TABLE, key_value)
    op.create_index("idx_document_metadata_doc_key_value", TABLE, doc_key_value)


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("coordination_id", sa.Uuid(as_uuid=False), nullable=True))
    _indexes(["key"], ["document_id", "key"])


def downgrade() -> None:
    _indexes(["key", "value"], ["document_id", "key", "value"])
    with batch_alter_table(TABLE) as batch:
        batch.drop_column("coordination_id")

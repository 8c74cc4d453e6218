"""S5 (DocEX 2.8.4 - 2.8.7): three more indexes from schema.sql.

Revision ID: s5_docex_2_8_4
Revises: s4_docex_2_6_1
"""

import sqlalchemy as sa

from alembic import op

revision = "s5_docex_2_8_4"
down_revision = "s4_docex_2_6_1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("idx_docbasket_status", "docbasket", ["status"])
    op.create_index("idx_docbasket_created_at", "docbasket", [sa.column("created_at").desc()])
    op.create_index("idx_document_metadata_doc_key_value", "document_metadata", ["document_id", "key", "value"])


def downgrade() -> None:
    op.drop_index("idx_document_metadata_doc_key_value", table_name="document_metadata")
    op.drop_index("idx_docbasket_created_at", table_name="docbasket")
    op.drop_index("idx_docbasket_status", table_name="docbasket")

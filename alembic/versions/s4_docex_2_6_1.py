"""S4 (DocEX 2.6.1 - 2.8.3): the 23 performance indexes of DocEX's first shipped schema.sql.

Revision ID: s4_docex_2_6_1
Revises: s3_docex_2_2_1
"""

import sqlalchemy as sa

from alembic import op

revision = "s4_docex_2_6_1"
down_revision = "s3_docex_2_2_1"
branch_labels = None
depends_on = None

# (name, table, columns) exactly as schema.sql names them; "x DESC" keeps the sort order.
INDEXES = (
    ("idx_documents_basket_id", "document", ["basket_id"]),
    ("idx_documents_document_type", "document", ["document_type"]),
    ("idx_documents_status", "document", ["status"]),
    ("idx_file_history_document_id", "file_history", ["document_id"]),
    ("idx_operations_document_id", "operations", ["document_id"]),
    ("idx_operations_operation_type", "operations", ["operation_type"]),
    ("idx_operations_status", "operations", ["status"]),
    ("idx_operation_dependencies_operation_id", "operation_dependencies", ["operation_id"]),
    ("idx_operation_dependencies_depends_on", "operation_dependencies", ["depends_on"]),
    ("idx_doc_events_basket_id", "doc_events", ["basket_id"]),
    ("idx_doc_events_event_type", "doc_events", ["event_type"]),
    ("idx_doc_events_document_id", "doc_events", ["document_id"]),
    ("idx_doc_events_event_timestamp", "doc_events", ["event_timestamp"]),
    ("idx_doc_events_status", "doc_events", ["status"]),
    ("idx_document_metadata_document_id", "document_metadata", ["document_id"]),
    ("idx_document_metadata_key", "document_metadata", ["key"]),
    ("idx_document_metadata_type", "document_metadata", ["metadata_type"]),
    ("idx_document_metadata_key_value", "document_metadata", ["key", "value"]),
    ("idx_document_basket_status", "document", ["basket_id", "status"]),
    ("idx_document_basket_type", "document", ["basket_id", "document_type"]),
    ("idx_document_basket_created", "document", ["basket_id", "created_at DESC"]),
    ("idx_document_basket_updated", "document", ["basket_id", "updated_at DESC"]),
    ("idx_document_basket_name", "document", ["basket_id", "name"]),
)


def index_columns(columns: list[str]) -> list:
    """Plain names stay names (quoted where needed, e.g. "key"); 'col DESC' becomes an expression."""
    return [sa.column(c[: -len(" DESC")]).desc() if c.endswith(" DESC") else c for c in columns]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, index_columns(columns))


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)

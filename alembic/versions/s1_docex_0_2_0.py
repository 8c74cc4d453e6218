"""S1: the first DocEX tenant schema (DocEX 0.2.0, 2.0.2): 11 tables, no extra indexes.

transport_routes.protocol and route_operations.operation_type are enums holding the enum
NAMES ('LOCAL', 'UPLOAD'); on PostgreSQL they are the native types transporttype and
routemethod, created inside the tenant's schema.

Revision ID: s1_docex_0_2_0
Revises:
"""

import sqlalchemy as sa

from alembic import op
from docex_migrate.revision_tools import dialect_name

revision = "s1_docex_0_2_0"
down_revision = None
branch_labels = None
depends_on = None

TRANSPORT_TYPES = ("LOCAL", "SFTP", "HTTP", "SMTP", "S3", "AZURE", "GCS")
ROUTE_METHODS = ("UPLOAD", "DOWNLOAD", "LIST", "DELETE")


def upgrade() -> None:
    op.create_table(
        "docbasket",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("storage_config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_docbasket_name"),
    )
    op.create_table(
        "processors",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "transport_routes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(50), nullable=False),
        sa.Column("protocol", sa.Enum(*TRANSPORT_TYPES, name="transporttype"), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("can_upload", sa.Boolean(), nullable=False),
        sa.Column("can_download", sa.Boolean(), nullable=False),
        sa.Column("can_list", sa.Boolean(), nullable=False),
        sa.Column("can_delete", sa.Boolean(), nullable=False),
        sa.Column("other_party_id", sa.String(255)),
        sa.Column("other_party_name", sa.String(255)),
        sa.Column("other_party_type", sa.String(50)),
        sa.Column("route_metadata", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "document",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("basket_id", sa.String(36), sa.ForeignKey("docbasket.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(100)),
        sa.Column("document_type", sa.String(50), nullable=False),
        sa.Column("content", sa.JSON()),
        sa.Column("raw_content", sa.Text()),
        sa.Column("size", sa.Integer()),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("processing_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "route_operations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("route_id", sa.String(36), sa.ForeignKey("transport_routes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("operation_type", sa.Enum(*ROUTE_METHODS, name="routemethod"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("document_id", sa.String(255)),
        sa.Column("details", sa.JSON()),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime()),
    )
    op.create_table(
        "doc_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("basket_id", sa.String(36), sa.ForeignKey("docbasket.id", ondelete="CASCADE"), nullable=False),
        sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id", ondelete="NO ACTION")),
        sa.Column("event_type", sa.String(50), nullable=False),
        sa.Column("event_timestamp", sa.DateTime(), nullable=False),
        sa.Column("data", sa.JSON()),
        sa.Column("source", sa.String(50), nullable=False, server_default="docflow"),
        sa.Column("status", sa.String(20), nullable=False, server_default="PENDING"),
        sa.Column("error_message", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "document_metadata",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("metadata_type", sa.String(50), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "file_history",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id"), nullable=False),
        sa.Column("original_path", sa.String(255)),
        sa.Column("internal_path", sa.String(255)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id", ondelete="CASCADE"), nullable=False),
        sa.Column("operation_type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("details", sa.JSON()),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime()),
    )
    op.create_table(
        "processing_operations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id", ondelete="CASCADE"), nullable=False),
        sa.Column("processor_id", sa.String(36), sa.ForeignKey("processors.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("input_metadata", sa.JSON()),
        sa.Column("output_metadata", sa.JSON()),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime()),
    )
    op.create_table(
        "operation_dependencies",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("operation_id", sa.String(36), sa.ForeignKey("operations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("depends_on", sa.String(36), sa.ForeignKey("operations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "operation_dependencies", "processing_operations", "operations", "file_history",
        "document_metadata", "doc_events", "route_operations", "document", "transport_routes",
        "processors", "docbasket",
    ):
        op.drop_table(table)
    # Dropping the tables leaves PostgreSQL's native enum types behind; they belong to S1.
    if dialect_name() == "postgresql":
        sa.Enum(name="routemethod").drop(op.get_bind(), checkfirst=False)
        sa.Enum(name="transporttype").drop(op.get_bind(), checkfirst=False)

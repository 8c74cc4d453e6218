"""The DocEX tenant schema at the head of the chain (DocEX 2.9.10), as SQLAlchemy metadata.

This is the target ``revision --autogenerate`` compares against; a test proves that a tenant
migrated to head and this metadata agree. Change it together with a new revision.
Model-side Python defaults (ids, timestamps, statuses) live in DocEX, not in the DDL.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

metadata = sa.MetaData()


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(36), primary_key=True)


def _created() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(), nullable=False)


def _updated() -> sa.Column[datetime]:
    return sa.Column("updated_at", sa.DateTime(), nullable=False)


docbasket = sa.Table(
    "docbasket",
    metadata,
    _id(),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text()),
    sa.Column("storage_config", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(50), nullable=False),
    _created(),
    _updated(),
    sa.UniqueConstraint("name", name="uq_docbasket_name"),
)

document = sa.Table(
    "document",
    metadata,
    _id(),
    sa.Column("basket_id", sa.String(36), sa.ForeignKey("docbasket.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("path", sa.Text(), nullable=False),
    sa.Column("content_type", sa.String(100)),
    sa.Column("document_type", sa.String(50), nullable=False),
    sa.Column("content", sa.JSON()),
    sa.Column("raw_content", sa.Text()),
    sa.Column("size", sa.Integer()),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("status", sa.String(50), nullable=False),
    sa.Column("processing_attempts", sa.Integer(), nullable=False),
    _created(),
    _updated(),
)

document_metadata = sa.Table(
    "document_metadata",
    metadata,
    _id(),
    sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id"), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("metadata_type", sa.String(50), nullable=False),
    sa.Column("coordination_id", sa.Uuid(as_uuid=False)),
    _created(),
    _updated(),
)

file_history = sa.Table(
    "file_history",
    metadata,
    _id(),
    sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id"), nullable=False),
    sa.Column("original_path", sa.Text()),
    sa.Column("internal_path", sa.Text()),
    _created(),
)

operations = sa.Table(
    "operations",
    metadata,
    _id(),
    sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id", ondelete="CASCADE"), nullable=False),
    sa.Column("operation_type", sa.String(100), nullable=False),
    sa.Column("status", sa.String(50), nullable=False),
    sa.Column("details", sa.JSON()),
    sa.Column("error", sa.Text()),
    _created(),
    sa.Column("completed_at", sa.DateTime()),
)

operation_dependencies = sa.Table(
    "operation_dependencies",
    metadata,
    _id(),
    sa.Column("operation_id", sa.String(36), sa.ForeignKey("operations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("depends_on", sa.String(36), sa.ForeignKey("operations.id", ondelete="CASCADE"), nullable=False),
    _created(),
)

doc_events = sa.Table(
    "doc_events",
    metadata,
    _id(),
    sa.Column("basket_id", sa.String(36), sa.ForeignKey("docbasket.id", ondelete="CASCADE"), nullable=False),
    sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id", ondelete="NO ACTION")),
    sa.Column("event_type", sa.String(50), nullable=False),
    sa.Column("event_timestamp", sa.DateTime(), nullable=False),
    sa.Column("data", sa.JSON()),
    sa.Column("source", sa.String(50), nullable=False, server_default="docex"),
    sa.Column("status", sa.String(20), nullable=False, server_default="PENDING"),
    sa.Column("error_message", sa.Text()),
    _created(),
    _updated(),
)

processors = sa.Table(
    "processors",
    metadata,
    _id(),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("type", sa.String(50), nullable=False),
    sa.Column("description", sa.Text()),
    sa.Column("config", sa.JSON(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    _created(),
    _updated(),
)

processing_operations = sa.Table(
    "processing_operations",
    metadata,
    _id(),
    sa.Column("document_id", sa.String(36), sa.ForeignKey("document.id", ondelete="CASCADE"), nullable=False),
    sa.Column("processor_id", sa.String(36), sa.ForeignKey("processors.id", ondelete="CASCADE"), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("input_metadata", sa.JSON()),
    sa.Column("output_metadata", sa.JSON()),
    sa.Column("error", sa.Text()),
    _created(),
    sa.Column("completed_at", sa.DateTime()),
)

transport_routes = sa.Table(
    "transport_routes",
    metadata,
    _id(),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("purpose", sa.String(50), nullable=False),
    sa.Column("protocol", sa.String(50), nullable=False),
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
    _created(),
    _updated(),
)

route_operations = sa.Table(
    "route_operations",
    metadata,
    _id(),
    sa.Column("route_id", sa.String(36), sa.ForeignKey("transport_routes.id", ondelete="CASCADE"), nullable=False),
    sa.Column("operation_type", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("document_id", sa.String(255)),
    sa.Column("details", sa.JSON()),
    sa.Column("error", sa.Text()),
    _created(),
    sa.Column("completed_at", sa.DateTime()),
)

# Every index comes from DocEX's db/schema.sql, names included.
_d, _dm, _de, _b = document.c, document_metadata.c, doc_events.c, docbasket.c
sa.Index("idx_documents_basket_id", _d.basket_id)
sa.Index("idx_documents_document_type", _d.document_type)
sa.Index("idx_documents_status", _d.status)
sa.Index("idx_document_basket_status", _d.basket_id, _d.status)
sa.Index("idx_document_basket_type", _d.basket_id, _d.document_type)
sa.Index("idx_document_basket_created", _d.basket_id, _d.created_at.desc())
sa.Index("idx_document_basket_updated", _d.basket_id, _d.updated_at.desc())
sa.Index("idx_document_basket_name", _d.basket_id, _d.name)
sa.Index("idx_file_history_document_id", file_history.c.document_id)
sa.Index("idx_operations_document_id", operations.c.document_id)
sa.Index("idx_operations_operation_type", operations.c.operation_type)
sa.Index("idx_operations_status", operations.c.status)
sa.Index("idx_operation_dependencies_operation_id", operation_dependencies.c.operation_id)
sa.Index("idx_operation_dependencies_depends_on", operation_dependencies.c.depends_on)
sa.Index("idx_doc_events_basket_id", _de.basket_id)
sa.Index("idx_doc_events_event_type", _de.event_type)
sa.Index("idx_doc_events_document_id", _de.document_id)
sa.Index("idx_doc_events_event_timestamp", _de.event_timestamp)
sa.Index("idx_doc_events_status", _de.status)
sa.Index("idx_document_metadata_document_id", _dm.document_id)
sa.Index("idx_document_metadata_key", _dm.key)
sa.Index("idx_document_metadata_type", _dm.metadata_type)
sa.Index("idx_document_metadata_key_value", _dm.key)
sa.Index("idx_document_metadata_doc_key_value", _dm.document_id, _dm.key)
sa.Index("idx_docbasket_status", _b.status)
sa.Index("idx_docbasket_created_at", _b.created_at.desc())

TABLE_NAMES = tuple(metadata.tables)
INDEX_NAMES = tuple(sorted(str(ix.name) for t in metadata.tables.values() for ix in t.indexes))

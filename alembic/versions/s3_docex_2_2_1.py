"""S3 (DocEX 2.2.1 - 2.6.0): the two enum columns become VARCHAR(50) holding enum VALUES.

transport_routes.protocol and route_operations.operation_type stored enum names ('LOCAL',
'UPLOAD'); DocEX 2.2.1+ writes and reads the values ('local', 'upload') and raises on the old
names. So this is a data change as well as a type change, and PostgreSQL's native enum types
transporttype and routemethod are dropped. The downgrade reverses both.

Revision ID: s3_docex_2_2_1
Revises: s2_docex_2_0_3
"""

import sqlalchemy as sa

from alembic import op
from docex_migrate.revision_tools import batch_alter_table, dialect_name

revision = "s3_docex_2_2_1"
down_revision = "s2_docex_2_0_3"
branch_labels = None
depends_on = None

# (table, column, enum type, names) with DocEX's enum values: the names lower-cased.
ENUM_COLUMNS = (
    ("transport_routes", "protocol", "transporttype", ("LOCAL", "SFTP", "HTTP", "SMTP", "S3", "AZURE", "GCS")),
    ("route_operations", "operation_type", "routemethod", ("UPLOAD", "DOWNLOAD", "LIST", "DELETE")),
)


def _remap(table: str, column: str, mapping: dict[str, str]) -> None:
    """Rewrite stored values through ``mapping``; anything else is left as it is."""
    col = sa.column(column)
    op.execute(
        sa.table(table, col)
        .update()
        .where(col.in_(list(mapping)))
        .values({column: sa.case(mapping, value=col)})
    )


def upgrade() -> None:
    is_postgres = dialect_name() == "postgresql"
    for table, column, type_name, names in ENUM_COLUMNS:
        with batch_alter_table(table) as batch:
            batch.alter_column(
                column,
                existing_type=sa.Enum(*names, name=type_name),
                existing_nullable=False,
                type_=sa.String(50),
                postgresql_using=f"{column}::text",
            )
        _remap(table, column, {name: name.lower() for name in names})
        if is_postgres:
            sa.Enum(name=type_name).drop(op.get_bind(), checkfirst=False)


def downgrade() -> None:
    is_postgres = dialect_name() == "postgresql"
    for table, column, type_name, names in ENUM_COLUMNS:
        enum = sa.Enum(*names, name=type_name)
        _remap(table, column, {name.lower(): name for name in names})
        if is_postgres:
            enum.create(op.get_bind(), checkfirst=False)
        with batch_alter_table(table) as batch:
            batch.alter_column(
                column,
                existing_type=sa.String(50),
                existing_nullable=False,
                type_=enum,
                postgresql_using=f"{column}::{type_name}",
            )

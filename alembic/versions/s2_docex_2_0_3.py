"""S2 (DocEX 2.0.3 - 2.2.0): doc_events.source server default 'docflow' -> 'docex'.

Revision ID: s2_docex_2_0_3
Revises: s1_docex_0_2_0
"""

import sqlalchemy as sa

from docex_migrate.revision_tools import batch_alter_table

revision = "s2_docex_2_0_3"
down_revision = "s1_docex_0_2_0"
branch_labels = None
depends_on = None


def _source_default(default: str, previous: str) -> None:
    with batch_alter_table("doc_events") as batch:
        batch.alter_column(
            "source",
            existing_type=sa.String(50),
            existing_nullable=False,
            existing_server_default=previous,
            server_default=default,
        )


def upgrade() -> None:
    _source_default("docex", previous="docflow")


def downgrade() -> None:
    _source_default("docflow", previous="docex")

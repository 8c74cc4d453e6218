"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Never name a schema here: each run is scoped to one tenant's namespace. Change columns and
constraints with docex_migrate.revision_tools.batch_alter_table (Alembic's batch mode, which also
renders offline and keeps the DESC of the table's indexes when SQLite rebuilds it). Create and
drop indexes with op.create_index / op.drop_index, outside the batch. Give it a downgrade() that
undoes the upgrade exactly; `docex-migrate check` proves both.
"""
from typing import Sequence, Union

import sqlalchemy as sa
${imports if imports else ""}
from alembic import op
from docex_migrate.revision_tools import batch_alter_table

revision: str = ${repr(up_revision)}
down_revision: Union[str, Sequence[str], None] = ${repr(down_revision)}
branch_labels: Union[str, Sequence[str], None] = ${repr(branch_labels)}
depends_on: Union[str, Sequence[str], None] = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}

"""`make test-next-revision`: the fast half of the suite once more, on a scratch copy of the
chain with one more revision on top of the head, so that no test can assume the head is
DocEX 2.9.10's revision or that the chain has seven revisions.

The extra revision adds a small table (and drops it on downgrade); the same table is added to
the package's tenant metadata in this process, as a revision author would add it to
docex_migrate/schema.py, so autogenerate and the metadata check still agree with the head.
Tests that compare the head with DocEX 2.9.10 itself (its reference dumps, the shipped
snapshots) legitimately differ: they are marked ``released_head`` and left out, as are
the ``slow`` ones (the installed console script in a subprocess would not see the metadata).
Extra arguments go to pytest.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the source tree's package, as `python -m pytest` from ROOT imports it

import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from docex_migrate import schema  # noqa: E402
from docex_migrate.chain import SCRIPT_LOCATION_ENV, load_chain  # noqa: E402

TABLE = "next_revision_note"
NEXT_REVISION = f'''"""next: a throwaway revision on top of the head (tests/next_revision.py)

Revision ID: zz_next_revision
Revises: {{head}}
"""
import sqlalchemy as sa
from alembic import op

revision = "zz_next_revision"
down_revision = "{{head}}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("{TABLE}", sa.Column("note", sa.Text))


def downgrade() -> None:
    op.drop_table("{TABLE}")
'''


def main(pytest_args: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="docex_migrate_next_") as scratch:
        os.chmod(scratch, 0o755)  # readable by every user, as the checkout is (a test runs the CLI as nobody)
        chain = Path(scratch) / "alembic"
        shutil.copytree(ROOT / "alembic", chain, ignore=shutil.ignore_patterns("__pycache__"))
        head = load_chain().head
        (chain / "versions" / "zz_next_revision.py").write_text(NEXT_REVISION.format(head=head))
        os.environ[SCRIPT_LOCATION_ENV] = str(chain)
        sa.Table(TABLE, schema.metadata, sa.Column("note", sa.Text))
        print(f"test-next-revision: {chain}, zz_next_revision on top of {head}", flush=True)
        os.chdir(ROOT)
        return pytest.main(["-p", "no:cacheprovider", "-m", "not slow and not released_head", *pytest_args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

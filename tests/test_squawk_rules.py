"""The lint check's squawk configuration: the rules that cannot apply to this tool are off for
every revision (no opt-out needed for a plain CREATE INDEX, a naive timestamp, a VARCHAR or an
INTEGER, as DocEX declares them), and the rules that matter still fail a revision."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docex_migrate import checks
from docex_migrate.chain import load_chain

REVISION = '''"""{doc}

Revision ID: {name}
Revises: {head}
"""
import sqlalchemy as sa
from alembic import op

from docex_migrate.revision_tools import batch_alter_table

revision = "{name}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''

ROUTINE = (
    "    with batch_alter_table('docbasket') as batch:\n"
    "        batch.add_column(sa.Column('archived_at', sa.DateTime()))\n"
    "        batch.add_column(sa.Column('owner', sa.String(64)))\n"
    "        batch.add_column(sa.Column('rank', sa.Integer()))\n"
    "    op.create_index('idx_docbasket_archived_at', 'docbasket', ['archived_at'])",
    "    op.drop_index('idx_docbasket_archived_at', table_name='docbasket')\n"
    "    with batch_alter_table('docbasket') as batch:\n"
    "        batch.drop_column('rank')\n"
    "        batch.drop_column('owner')\n"
    "        batch.drop_column('archived_at')",
)
REQUIRED_COLUMN = (
    "    with batch_alter_table('docbasket') as batch:\n        batch.add_column(sa.Column('owner', sa.Text(), nullable=False))",
    "    with batch_alter_table('docbasket') as batch:\n        batch.drop_column('owner')",
)
RETYPE = (
    "    with batch_alter_table('document') as batch:\n"
    "        batch.alter_column('checksum', existing_type=sa.String(64), type_=sa.String(32), existing_nullable=False)",
    "    with batch_alter_table('document') as batch:\n"
    "        batch.alter_column('checksum', existing_type=sa.String(32), type_=sa.String(64), existing_nullable=False)",
)


def add_revision(chain: Path, doc: str, body: tuple[str, str]) -> None:
    head = load_chain().head
    text = REVISION.format(doc=doc, name="n1", head=head, upgrade=body[0], downgrade=body[1])
    (chain / "versions" / "n1.py").write_text(text)


def lint(settings) -> checks.CheckResult:
    (result,) = checks.run_checks(settings, ["lint"])
    return result


def test_routine_index_and_docex_types_pass_lint_without_opt_outs(sqlite_env, chain_copy):
    add_revision(chain_copy, "a timestamp, a varchar, an integer and a plain index", ROUTINE)
    result = lint(sqlite_env.settings)
    assert result.status == checks.PASSED, result.evidence
    assert re.search(r"\d+ new or edited revision\(s\) pass squawk", result.message), result.message


def test_a_squawk_config_in_the_working_directory_changes_nothing(sqlite_env, chain_copy):
    (sqlite_env.workdir / ".squawk.toml").write_text('excluded_rules = ["adding-required-field", "adding-not-nullable-field"]\n')
    add_revision(chain_copy, "a required column", REQUIRED_COLUMN)
    assert lint(sqlite_env.settings).status == checks.FAILED


@pytest.mark.parametrize(
    ("body", "rule"),
    [(REQUIRED_COLUMN, "adding-required-field"), (RETYPE, "changing-column-type")],
    ids=["not-null-without-default", "column-type"],
)
def test_rules_that_matter_still_fail(sqlite_env, chain_copy, body, rule):
    add_revision(chain_copy, "risky", body)
    result = lint(sqlite_env.settings)
    assert result.status == checks.FAILED
    assert any(rule in line for line in result.evidence), result.evidence

"""What a revision can reach, the same whether docex-migrate drives the migration (one
MigrationContext per tenant, no env.py) or the plain Alembic CLI runs env.py: the tenant id, its
connection and its version table's schema, through ``op.get_context().config.attributes``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.config import main as alembic_main
from helpers import head, tenant_engine

from docex_migrate import api
from docex_migrate.config import load_settings

ROOT = Path(__file__).resolve().parents[1]

WHOAMI = '''"""whoami: records what the revision sees of its run

Revision ID: whoami
Revises: {head}
"""
import sqlalchemy as sa
from alembic import context, op

revision = "whoami"
down_revision = "{head}"
branch_labels = None
depends_on = None
replayable = False  # it reads the tenant id: fresh tenants must run it themselves


def upgrade() -> None:
    attributes = op.get_context().config.attributes
    table = op.create_table("whoami", sa.Column("tenant", sa.Text), sa.Column("schema", sa.Text), sa.Column("bind", sa.Text))
    same = op.get_bind() is attributes["connection"] and context.get_context() is op.get_context()
    op.bulk_insert(table, [{{"tenant": attributes["tenant_id"], "schema": str(attributes["version_table_schema"]), "bind": str(same)}}])


def downgrade() -> None:
    op.drop_table("whoami")
'''


def _seen(env, tenant_id: str) -> tuple[str, str, str]:
    engine = tenant_engine(env, tenant_id)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text("SELECT tenant, schema, bind FROM whoami")).one())
    finally:
        engine.dispose()


def test_a_revision_reaches_the_tenant_id_and_config_attributes(env, chain_copy, tmp_path):
    api.provision(env.settings, ["upgraded"])  # at the head, before the revision exists
    (chain_copy / "versions" / "whoami.py").write_text(WHOAMI.format(head=head()))
    (result,) = api.upgrade(env.settings, ["upgraded"])
    assert result.action == "upgraded"
    (result,) = api.provision(env.settings, ["provisioned"])  # replayable = False: the chain runs for it
    assert result.action == "provisioned"
    ini = tmp_path / "alembic.ini"
    ini.write_text((ROOT / "alembic.ini").read_text().replace("%(here)s/alembic", str(chain_copy)))
    alembic_main(["-c", str(ini), "-x", f"config={env.config_file}", "-x", "tenant=by_cli", "upgrade", "head"])
    schema = "None" if env.kind == "sqlite" else None
    for tenant in ("upgraded", "provisioned", "by_cli"):
        assert _seen(env, tenant) == (tenant, schema or env.namespace(tenant), "True")


TRANSLATING = '''"""translating: a data migration that qualifies its tables with schema_translate_map

Revision ID: translating
Revises: {head}
"""
import sqlalchemy as sa
from alembic import op

revision = "translating"
down_revision = "{head}"
branch_labels = None
depends_on = None
replayable = False


def upgrade() -> None:
    schema = op.get_context().version_table_schema
    op.create_table("notes", sa.Column("n", sa.Integer))
    notes = sa.table("notes", sa.column("n"))
    # SQLAlchemy's multi-tenant idiom, on the connection itself and through op.execute: either
    # replaces the connection's whole map, which docex-migrate must not depend on
    bind = op.get_bind().execution_options(schema_translate_map={{None: schema}})
    bind.execute(notes.insert().values(n=1))
    op.execute(notes.insert().values(n=2), execution_options={{"schema_translate_map": {{None: schema}}}})


def downgrade() -> None:
    op.drop_table("notes")
'''


def test_a_revision_may_set_its_own_schema_translate_map(env, chain_copy):
    """Found in review: a shared version Table rendered through schema_translate_map broke
    every revision that sets a map of its own (the version UPDATE then missed the schema)."""
    api.provision(env.settings, ["acme", "beta"])
    (chain_copy / "versions" / "translating.py").write_text(TRANSLATING.format(head=head()))
    results = api.upgrade(env.settings, ["acme", "beta"])
    assert [(r.action, r.to_revision) for r in results] == [("upgraded", "translating")] * 2, [r.message for r in results]
    for tenant in ("acme", "beta"):
        engine = tenant_engine(env, tenant)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT n FROM notes ORDER BY n")).scalars().all() == [1, 2]
        finally:
            engine.dispose()


def test_mixed_case_and_hyphenated_schemas_go_up_and_down(pg_env, chain_copy):
    text = pg_env.config_file.read_text()
    prefix = re.search(r"schema_template: (\w+)\{tenant_id\}", text).group(1)
    pg_env.config_file.write_text(text.replace(prefix, "Up" + prefix))
    settings = load_settings()
    ids = ["acme-corp", "beta"]
    api.provision(settings, ids)
    before = head()
    (chain_copy / "versions" / "translating.py").write_text(TRANSLATING.format(head=before))
    results = api.upgrade(settings, ids)
    assert [r.action for r in results] == ["upgraded", "upgraded"], [r.message for r in results]
    assert all(r.namespace.startswith("Up") for r in results)
    results = api.downgrade(settings, ids, before)
    assert [r.action for r in results] == ["downgraded", "downgraded"], [r.message for r in results]
    assert [s.revision for s in api.status(settings, ids)] == [before] * 2


AUTOCOMMIT = '''"""autocommit: a step outside the tenant's transaction

Revision ID: autocommit
Revises: {head}
"""
from alembic import op

revision = "autocommit"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE before_block (x int)")
    with op.get_context().autocommit_block():
        op.execute("CREATE TABLE inside_block (x int)")


def downgrade() -> None:
    op.execute("DROP TABLE before_block")
'''


def test_a_step_outside_the_tenant_transaction_is_refused_and_nothing_is_committed(env, chain_copy):
    """autocommit_block() would commit mid-revision, ending the tenant's lock and search_path:
    the tenant fails with a message that says so, and what the revision did before is rolled back."""
    api.provision(env.settings, ["acme"])
    before = head()
    (chain_copy / "versions" / "autocommit.py").write_text(AUTOCOMMIT.format(head=before))
    (result,) = api.upgrade(env.settings, ["acme"])
    assert result.action == "failed"
    assert result.message.startswith("autocommit_block() is not supported: each tenant's upgrade is one transaction")
    assert [s.revision for s in api.status(env.settings, ["acme"])] == [before]
    engine = tenant_engine(env, "acme")
    try:
        assert not {"before_block", "inside_block"} & set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


ENDING = '''"""ending: a revision that ends the tenant's transaction itself

Revision ID: ending
Revises: {head}
"""
from alembic import op

revision = "ending"
down_revision = "{head}"
branch_labels = None
depends_on = None
replayable = False


def upgrade() -> None:
    op.execute("CREATE TABLE before_end (x int)")
    op.execute("INSERT INTO before_end VALUES (1)")
    op.execute("UPDATE alembic_version SET version_num = 'ending'")
    {end}
    op.execute("CREATE TABLE after_end (x int)")


def downgrade() -> None:
    op.execute("DROP TABLE after_end")
    op.execute("DROP TABLE before_end")
'''
ENDINGS = [
    'op.execute("COMMIT")',
    r'op.execute("-- note\nCOMMIT")',
    'op.execute("/* c */ COMMIT")',
    'op.execute("SELECT 1; COMMIT")',
    'op.execute("commit;")',
    'op.execute("END")',
    'op.execute("ROLLBACK")',
    'op.execute("ROLLBACK; CREATE TABLE after_rollback (x int)")',
    'op.execute("COMMIT AND CHAIN")',
    "op.get_bind().commit()",
    "op.get_bind().rollback()",
    'op.get_bind().exec_driver_sql("COMMIT")',
    "op.get_bind().connection.driver_connection.commit()",
]


def _contents(env, tenant_id: str) -> dict[str, list[tuple]]:
    """Every table of the tenant with its rows (alembic_version included)."""
    engine = tenant_engine(env, tenant_id)
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names(schema=env.namespace(tenant_id) if env.kind == "postgres" else None)
            return {n: sorted(map(tuple, conn.execute(sa.text(f'SELECT * FROM "{n}"')).all())) for n in names}
    finally:
        engine.dispose()


@pytest.mark.parametrize("end", ENDINGS)
def test_a_revision_that_ends_the_tenant_transaction_fails_and_nothing_is_committed(env, chain_copy, end, request):
    """Found in review: a revision's own COMMIT (in any spelling: after a comment, after another
    statement, SQLAlchemy's or the driver's) left the tenant half-migrated, and on SQLite nothing
    guarded it at all. Now the tenant fails and is exactly as it was (tables, rows, version row),
    nothing lands elsewhere, and the next tenant is treated the same way."""
    if env.kind == "postgres" and "driver_connection" in end:
        # Known gap, kept visible: strict, so closing it turns this into a failure to update.
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="PostgreSQL: a COMMIT sent past SQLAlchemy is seen only after it ran (docs/internals.md, Guarantees)",
            )
        )
    api.provision(env.settings, ["a", "b"])
    before = head()
    was = {t: _contents(env, t) for t in "ab"}
    (chain_copy / "versions" / "ending.py").write_text(ENDING.format(head=before, end=end))
    results = api.upgrade(env.settings, ["a", "b"])
    assert [(r.action, r.to_revision) for r in results] == [("failed", before)] * 2, [r.message for r in results]
    if not (env.kind == "sqlite" and "; " in end):  # sqlite3 refuses two statements in one execute itself
        assert results[0].message.startswith("ending the tenant's transaction is not supported"), results[0].message
    assert [s.revision for s in api.status(env.settings, ["a", "b"])] == [before] * 2
    assert {t: _contents(env, t) for t in "ab"} == was
    if env.kind == "postgres":
        with env.engine().connect() as conn:
            left = conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = ANY(:schemas)"),
                {"schemas": ["public", *map(env.namespace, "ab")]},
            ).scalars()
            left = {n for n in left if n in ("before_end", "after_end", "after_rollback")}
        assert left == set()


SAVEPOINT = '''"""savepoint: a revision that rolls back to a savepoint of its own

Revision ID: savepoint
Revises: {head}
"""
import sqlalchemy as sa
from alembic import op

revision = "savepoint"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE kept (x int)")
    savepoint = op.get_bind().begin_nested()
    op.execute("CREATE TABLE undone (x int)")
    savepoint.rollback()
    op.execute("SAVEPOINT mine")
    op.execute("CREATE TABLE undone_too (x int)")
    op.execute("ROLLBACK TO SAVEPOINT mine")
    op.execute("RELEASE SAVEPOINT mine")


def downgrade() -> None:
    op.execute("DROP TABLE kept")
'''


def test_a_revision_may_roll_back_to_a_savepoint(env, chain_copy):
    """ROLLBACK TO SAVEPOINT and RELEASE do not end the tenant's transaction: allowed, through
    SQLAlchemy or in SQL, on both backends."""
    api.provision(env.settings, ["a"])
    (chain_copy / "versions" / "savepoint.py").write_text(SAVEPOINT.format(head=head()))
    (result,) = api.upgrade(env.settings, ["a"])
    assert (result.action, result.to_revision) == ("upgraded", "savepoint"), result.message
    tables = set(_contents(env, "a"))
    assert "kept" in tables and not {"undone", "undone_too"} & tables


LEXED = '''"""lexed: a revision whose SQL only PostgreSQL's own lexer reads right

Revision ID: lexed
Revises: {head}
"""
from alembic import op

revision = "lexed"
down_revision = "{head}"
branch_labels = None
depends_on = None
replayable = False


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''


def _add_lexed(chain_copy: Path, body: str) -> None:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    (chain_copy / "versions" / "lexed.py").write_text(LEXED.format(head=head(), body=lines))


def _tables(env, tenant_id: str) -> set[str]:
    engine = tenant_engine(env, tenant_id)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names(schema=env.namespace(tenant_id)))
    finally:
        engine.dispose()


# PostgreSQL reads these as three statements, the second a COMMIT: an identifier may contain `$`
# and any non-ASCII character (here one outside the Basic Multilingual Plane), so `x😀$$` is a
# name, not the start of a dollar-quoted string.
ASTRAL_DOLLAR = """
op.execute("CREATE TABLE before_commit (x int)")
op.execute('SELECT 1 AS "a", 2 AS b\\U0001F600$$; COMMIT; SELECT 3 AS c\\U0001F600$$')
op.execute("CREATE TABLE after_commit (x int)")
"""


def test_pg_commit_after_an_astral_identifier_ending_in_dollars_is_refused_before_it_runs(pg_env, chain_copy):
    """Found in review: the guard's lexer stopped identifiers at characters above U+FFFF, took
    the `$$` ending `b😀$$` for a dollar quote and missed the COMMIT after it: the table created
    before it stayed committed in a tenant left at its old revision. Now refused before it is
    sent, nothing committed, as every other COMMIT spelling."""
    env = pg_env
    api.provision(env.settings, ["a"])
    before = head()
    _add_lexed(chain_copy, ASTRAL_DOLLAR)
    results = api.upgrade(env.settings, ["a"])
    assert [(r.action, r.to_revision) for r in results] == [("failed", before)], [r.message for r in results]
    assert "before_commit" not in _tables(env, "a"), "the statement before the revision's COMMIT stayed committed"


# With standard_conforming_strings off (set by a revision, a role or the database), a backslash
# escapes a quote in an ordinary string: the server reads 'a\'' as the string a' and then runs
# the COMMIT.
NONSTANDARD_STRINGS = r"""
op.execute("CREATE TABLE before_commit (x int)")
op.execute("SET LOCAL standard_conforming_strings = off")
op.execute("SELECT 'a\\'' ; COMMIT; SELECT 'x'")
op.execute("CREATE TABLE after_commit (x int)")
"""


def test_pg_commit_after_a_backslash_quote_with_standard_conforming_strings_off_is_refused(pg_env, chain_copy):
    """Found in review: the guard read ordinary strings as standard_conforming_strings = on
    reads them, whatever the session's setting; with it off the server ran a COMMIT the guard
    took for text. Now the guard reads strings as the session does: refused, nothing committed."""
    env = pg_env
    api.provision(env.settings, ["a"])
    before = head()
    _add_lexed(chain_copy, NONSTANDARD_STRINGS)
    results = api.upgrade(env.settings, ["a"])
    assert [(r.action, r.to_revision) for r in results] == [("failed", before)], [r.message for r in results]
    assert "before_commit" not in _tables(env, "a"), "the statement before the revision's COMMIT stayed committed"


# PostgreSQL 14+'s SQL-standard function body: the `;` inside BEGIN ATOMIC ... END do not end the
# CREATE FUNCTION statement, and its END is not a transaction's END.
ATOMIC_BODY = """
op.execute("CREATE TABLE counters (n int)")
op.execute(
    "CREATE FUNCTION counters_total() RETURNS bigint LANGUAGE sql "
    "BEGIN ATOMIC SELECT coalesce(sum(n), 0) FROM counters; END"
)
"""


def test_pg_a_function_with_a_standard_sql_body_is_not_taken_for_a_transaction_end(pg_env, chain_copy):
    """Found in review: `CREATE FUNCTION ... BEGIN ATOMIC ...; END` (one statement to psql and
    the server) was refused, its closing END taken for a transaction's END. Now upgraded."""
    env = pg_env
    api.provision(env.settings, ["a"])
    _add_lexed(chain_copy, ATOMIC_BODY)
    results = api.upgrade(env.settings, ["a"])
    assert [(r.action, r.to_revision) for r in results] == [("upgraded", "lexed")], [r.message for r in results]

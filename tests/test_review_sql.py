"""upgrade --sql: per tenant, the script that takes it to the target, written and never run.

Every script is run the way a DBA runs it, with the database's own shell (`sqlite3 FILE <
script`, `psql -X -q -d URL -f script`, no extra flags): a tenant migrated by its script is
identical to one the tool migrated; a stale script (the tenant moved on since), or one run a
second time, stops at its guard with a non-zero exit and changes nothing. Both backends, the
real chain (s6 and s7 rebuild tables on SQLite: the batch steps need each table as it is), and
tenants at base both ways (an empty namespace, and one downgraded to base whose alembic_version
is there, empty)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import cli, head, migrate_to, reported, tenant_engine, tenant_snapshot, version_of

from docex_migrate.review import literal_statement

START = "s5_docex_2_8_4"


def shell(tool: str) -> str:
    """A real shell: CI must have it (DOCEX_REQUIRE_POSTGRES=1 marks CI); elsewhere skip."""
    if shutil.which(tool) is None:
        reason = f"no `{tool}` on PATH: install it (apt-get install -y {'sqlite3' if tool == 'sqlite3' else 'postgresql-client'})"
        if os.environ.get("DOCEX_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return tool


def run_by_hand(env, tenant: str, script: Path) -> subprocess.CompletedProcess[str]:
    """The script run as its header says: the sqlite3 shell on the tenant's file, or psql."""
    if env.kind == "sqlite":
        with script.open() as stdin:
            return subprocess.run([shell("sqlite3"), env.namespace(tenant)], stdin=stdin, capture_output=True, text=True)
    url = env.url.set(drivername="postgresql").render_as_string(False)
    return subprocess.run([shell("psql"), "-X", "-q", "-d", url, "-f", str(script)], capture_output=True, text=True)


def dump(env, tenant: str) -> str:
    """Everything in the tenant, rows included, as the database's own dump tool writes it."""
    if env.kind == "sqlite":
        args = [shell("sqlite3"), env.namespace(tenant), ".dump"]
    else:
        url = env.url.set(drivername="postgresql").render_as_string(False)
        args = [shell("pg_dump"), "--no-owner", f"--schema={env.namespace(tenant)}", "-d", url]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    # pg_dump's \restrict line carries a random key each time
    return "\n".join(line for line in done.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def add_a_basket(env, tenant: str) -> None:
    engine = tenant_engine(env, tenant)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO docbasket (id, name, storage_config, status, created_at, updated_at) "
                "VALUES ('b1', 'invoices', '{}', 'active', '2026-01-01', '2026-01-01')"
            )
        )
    engine.dispose()


def render(tmp_path: Path, *tenants: str, extra: tuple[str, ...] = ()) -> dict[str, dict]:
    args = ["upgrade", "--sql", "--output", str(tmp_path / "sql"), "--json", *extra]
    result = cli(*args, *[a for t in tenants for a in ("--tenant", t)])
    assert result.exit_code == 0, result.output
    return {r["tenant_id"]: r for r in reported(result.stdout)}


def test_a_tenant_migrated_by_its_script_equals_one_the_tool_migrated(env, tmp_path):
    assert cli("provision", "scripted", "by_tool", "current").exit_code == 0
    for tenant in ("scripted", "by_tool"):
        migrate_to(env, tenant, START, downgrade=True)
        add_a_basket(env, tenant)
    before = dump(env, "scripted")

    result = cli("upgrade", "--all-tenants", "--sql", "--output", str(tmp_path / "sql"))
    assert result.exit_code == 0, result.output
    assert "2 scripted, 1 skipped" in result.stdout and "nothing to upgrade" not in result.stdout
    rows = render(tmp_path, "scripted", "current")
    assert rows["current"]["action"] == "skipped" and rows["current"]["message"] == "already at the target"
    assert rows["scripted"]["action"] == "scripted" and "written" in rows["scripted"]["message"]
    assert version_of(env, "scripted") == (START,) and dump(env, "scripted") == before  # nothing ran
    script = tmp_path / "sql" / "scripted.sql"
    text = script.read_text()
    assert text.count("COMMIT;") == 1 and ("pg_advisory_xact_lock" in text or "BEGIN IMMEDIATE" in text)

    done = run_by_hand(env, "scripted", script)
    assert done.returncode == 0 and done.stdout == done.stderr == "", done.stderr  # quiet when all goes well
    assert cli("upgrade", "--tenant", "by_tool").exit_code == 0
    assert version_of(env, "scripted") == version_of(env, "by_tool") == (head(),)
    assert tenant_snapshot(env, "scripted") == tenant_snapshot(env, "by_tool")
    same = [sorted(dump(env, t).replace(env.namespace(t), "T").splitlines()) for t in ("scripted", "by_tool")]
    assert same[0] == same[1]  # rows included (the order objects were created in aside)

    # Run again, the script finds its tenant moved on and stops, changing nothing.
    after = dump(env, "scripted")
    done = run_by_hand(env, "scripted", script)
    assert done.returncode != 0
    assert "tenant scripted is no longer at" in done.stderr
    assert dump(env, "scripted") == after and version_of(env, "scripted") == (head(),)


def test_a_stale_script_stops_at_its_guard_and_changes_nothing(env, tmp_path):
    """Rendered at s5; the tool then takes the tenant to head. Under the sqlite3 shell the guard's
    error used to be reported and the rest run and committed, rebuilding tables at head."""
    assert cli("provision", "moved").exit_code == 0
    migrate_to(env, "moved", START, downgrade=True)
    add_a_basket(env, "moved")
    render(tmp_path, "moved")
    assert cli("upgrade", "--tenant", "moved").exit_code == 0
    moved_on = dump(env, "moved")

    done = run_by_hand(env, "moved", tmp_path / "sql" / "moved.sql")
    assert done.returncode != 0 and f"tenant moved is no longer at {START}" in done.stderr
    assert dump(env, "moved") == moved_on and version_of(env, "moved") == (head(),)


def _empty_namespace(env, tenant: str) -> None:
    if env.kind == "sqlite":
        path = Path(env.namespace(tenant))
        path.parent.mkdir(parents=True)
        path.touch()
    else:
        with env.engine().begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{env.namespace(tenant)}"')


def _at_base_with_an_empty_version_table(env, tenant: str) -> None:
    assert cli("provision", tenant).exit_code == 0
    migrate_to(env, tenant, None, downgrade=True)


@pytest.mark.parametrize("at_base", [_empty_namespace, _at_base_with_an_empty_version_table], ids=["empty", "downgraded"])
def test_a_script_from_base_runs_by_hand_once(env, tmp_path, at_base):
    for tenant in ("scripted", "by_tool"):
        at_base(env, tenant)
    rows = render(tmp_path, "scripted")
    assert rows["scripted"]["action"] == "scripted" and rows["scripted"]["from_revision"] is None
    script = tmp_path / "sql" / "scripted.sql"

    done = run_by_hand(env, "scripted", script)
    assert done.returncode == 0, done.stderr
    assert cli("upgrade", "--tenant", "by_tool").exit_code == 0
    assert version_of(env, "scripted") == version_of(env, "by_tool") == (head(),)
    assert tenant_snapshot(env, "scripted") == tenant_snapshot(env, "by_tool")

    at_head = dump(env, "scripted")
    again = run_by_hand(env, "scripted", script)
    assert again.returncode != 0 and "tenant scripted is no longer at base" in again.stderr
    assert dump(env, "scripted") == at_head


@pytest.mark.postgres
def test_a_tenant_named_all_tenants_keeps_its_own_script(pg_env, tmp_path):
    assert cli("provision", "all-tenants", "other").exit_code == 0
    for tenant in ("all-tenants", "other"):
        migrate_to(pg_env, tenant, START, downgrade=True)
    render(tmp_path, "all-tenants", "other")
    own = (tmp_path / "sql" / "all-tenants.sql").read_text()
    assert "tenant all-tenants," in own and "tenant other," not in own

    done = run_by_hand(pg_env, "all-tenants", tmp_path / "sql" / "all-tenants.sql")
    assert done.returncode == 0, done.stderr
    assert version_of(pg_env, "all-tenants") == (head(),) and version_of(pg_env, "other") == (START,)

    # The combined script stops at the first tenant that moved on, whichever it is.
    at_head = dump(pg_env, "all-tenants")
    done = run_by_hand(pg_env, "all-tenants", tmp_path / "sql" / "_all-tenants.sql")
    assert done.returncode != 0 and "tenant all-tenants is no longer at" in done.stderr
    assert version_of(pg_env, "all-tenants") == (head(),)
    assert dump(pg_env, "all-tenants") == at_head


@pytest.mark.parametrize(
    "options",
    [
        ["--resume", "r1"],
        ["--canary", "a"],
        ["--waves", "1,100%"],
        ["--pause-between-waves", "5"],
        ["--adopt"],
        ["--verify-first"],
        ["--jobs", "2"],
        ["--fail-fast"],
        ["--max-failures", "3"],
    ],
)
def test_sql_refuses_what_it_cannot_honour(sqlite_env, tmp_path, options):
    assert cli("provision", "a").exit_code == 0
    migrate_to(sqlite_env, "a", START, downgrade=True)
    tenants = [] if options[0] == "--resume" else ["--tenant", "a"]
    result = cli("upgrade", *tenants, "--sql", "--output", str(tmp_path / "sql"), *options)
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and options[0] in result.output
    assert not (tmp_path / "sql").exists() and version_of(sqlite_env, "a") == (START,)


def test_output_without_sql_is_refused(sqlite_env, tmp_path):
    assert cli("provision", "a").exit_code == 0
    migrate_to(sqlite_env, "a", START, downgrade=True)
    result = cli("upgrade", "--tenant", "a", "--output", str(tmp_path / "sql"))
    assert result.exit_code == 2 and "--sql" in result.output
    assert version_of(sqlite_env, "a") == (START,)


def test_the_timeouts_given_are_the_scripts(env, tmp_path):
    """--lock-timeout, --tenant-lock-wait and (PostgreSQL) --statement-timeout are honoured: the
    script takes them, as the tool would."""
    assert cli("provision", "a").exit_code == 0
    migrate_to(env, "a", START, downgrade=True)
    render(tmp_path, "a", extra=("--lock-timeout", "7", "--tenant-lock-wait", "9", "--statement-timeout", "11", "--shard", "0/1"))
    text = (tmp_path / "sql" / "a.sql").read_text()
    if env.kind == "sqlite":
        assert ".timeout 9000\nBEGIN IMMEDIATE;\n.timeout 7000\n" in text
    else:
        assert all(f"'{ms}ms'" in text for ms in (7000, 9000, 11000))


def test_any_command_sweeps_scratch_a_killed_render_left(sqlite_env):
    """A process killed (-9) while it holds a review copy of a tenant file leaves it in $TMPDIR;
    the next command of any kind removes it (a live holder's directory is left alone)."""
    holder = (
        "import sys, time\n"
        "from docex_migrate.tempdirs import locked_directory\n"
        "with locked_directory('docex_migrate_review_') as d:\n"
        "    (d / 'tenant.db').write_bytes(b'copy of a tenant')\n"
        "    print(d, flush=True)\n"
        "    time.sleep(600)\n"
    )
    killed = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    alive = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        left, held = Path(killed.stdout.readline().strip()), Path(alive.stdout.readline().strip())
        killed.kill()
        killed.wait()
        old = time.time() - 3600  # past tempdirs.MIN_AGE: not one still taking its lock
        for directory in (left, held):
            os.utime(directory, (old, old))
        assert (left / "tenant.db").exists()

        assert cli("status").exit_code == 0
        assert not left.exists() and (held / "tenant.db").exists()
    finally:
        for process in (killed, alive):
            process.kill()
            process.wait()
            process.stdout.close()


def test_a_recorded_statement_reads_as_sqlite_binds_it():
    """A SQLite script is the statements recorded with their parameters written in: each
    literal must be the value the driver bound (a bool is 1, not the text 'True')."""
    values = (True, False, 7, 1.5, None, "it's", b"\x00\xff")
    with closing(sqlite3.connect(":memory:")) as db:
        bound = db.execute("SELECT ?, ?, ?, ?, ?, ?, ?", values).fetchone()
        assert db.execute(literal_statement("SELECT ?, ?, ?, ?, ?, ?, ?", values)).fetchone() == bound


def test_sql_takes_the_shard_it_is_given(sqlite_env, tmp_path):
    tenants = ["a", "b", "c", "d", "e"]
    assert cli("provision", *tenants).exit_code == 0
    for tenant in tenants:
        migrate_to(sqlite_env, tenant, "s6_docex_2_8_8", downgrade=True)
    written = []
    for shard in ("0/2", "1/2"):
        out = tmp_path / shard.replace("/", "-")
        assert cli("upgrade", "--all-tenants", "--sql", "--output", str(out), "--shard", shard).exit_code == 0
        written.append({p.stem for p in out.glob("*.sql")})
    assert written[0].isdisjoint(written[1]) and written[0] | written[1] == set(tenants)
    assert written[0] and written[1]  # both shards hold some of five tenants


def test_a_sqlite_review_script_run_by_a_shell_with_foreign_keys_on_keeps_every_row(sqlite_env, tmp_path):
    """The SQLite script rebuilds `document` (CREATE _alembic_tmp_document, copy, DROP TABLE
    document, RENAME). Under a sqlite3 shell with foreign keys enforced (`PRAGMA foreign_keys =
    ON` in ~/.sqliterc, the usual advice, or `-cmd`), DROP TABLE first deletes every row of the
    table, and each child row declared ON DELETE CASCADE (`operations`) went with it. The script
    sets what the tool's own connection has (foreign keys off), before its BEGIN."""
    env = sqlite_env
    assert cli("provision", "acme").exit_code == 0
    assert cli("downgrade", START, "--tenant", "acme", "--yes").exit_code == 0
    path = env.namespace("acme")
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO docbasket VALUES ('b1', 'invoices', NULL, '{}', 'active', '2026-01-01', '2026-01-01')")
        db.execute(
            "INSERT INTO document (id, basket_id, name, source, path, document_type, checksum, status,"
            " processing_attempts, created_at, updated_at)"
            " VALUES ('d1', 'b1', 'n', 's', 'p', 'file', 'c', 'new', 0, '2026-01-01', '2026-01-01')"
        )
        db.execute("INSERT INTO operations VALUES ('o1', 'd1', 'ingest', 'done', NULL, NULL, '2026-01-01', NULL)")
    result = cli("upgrade", "--tenant", "acme", "--sql", "--output", str(tmp_path / "sql"))
    assert result.exit_code == 0, result.output
    with open(tmp_path / "sql" / "acme.sql") as script:
        done = subprocess.run(
            [shell("sqlite3"), "-cmd", "PRAGMA foreign_keys = ON", path], stdin=script, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head(),)]
        assert db.execute("SELECT id FROM document").fetchall() == [("d1",)]
        assert db.execute("SELECT id FROM operations").fetchall() == [("o1",)], "the document's operations were deleted"


def test_the_command_a_script_header_gives_runs_the_script(env, tmp_path):
    """#4: "each script's header gives the exact command", run as printed from the directory the
    tool ran in (PostgreSQL's with the database URL filled in). It gave the script's name
    relative to --output and (SQLite) the tenant's path relative to the working directory: no
    directory had both."""
    assert cli("provision", "acme").exit_code == 0
    assert cli("downgrade", START, "--tenant", "acme", "--yes").exit_code == 0
    assert cli("upgrade", "--tenant", "acme", "--sql", "--output", "migration-sql").exit_code == 0
    header = (env.workdir / "migration-sql" / "acme.sql").read_text().splitlines()[1]
    command = header.split(": ", 1)[1]
    assert command.startswith(shell("sqlite3" if env.kind == "sqlite" else "psql") + " "), header
    if env.kind == "postgres":
        command = command.replace("DATABASE_URL", env.url.set(drivername="postgresql").render_as_string(False))
    done = subprocess.run(["sh", "-c", command], cwd=env.workdir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (command, done.stderr)
    assert version_of(env, "acme") == (head(),)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "psqlrc", ["\\set ON_ERROR_ROLLBACK on", "\\set AUTOCOMMIT off", "\\set ON_ERROR_ROLLBACK on\n\\set AUTOCOMMIT off"]
)
def test_a_psqlrc_changes_nothing_a_script_does(pg_env, tmp_path, psqlrc):
    """The script is run by a psql that read the DBA's ~/.psqlrc (no -X), or was given the same
    with -v: it still migrates exactly as the tool does, and a stale one still stops at its
    guard and changes nothing."""
    assert cli("provision", "a", "by_tool").exit_code == 0
    for tenant in ("a", "by_tool"):
        migrate_to(pg_env, tenant, START, downgrade=True)
        add_a_basket(pg_env, tenant)
    render(tmp_path, "a")
    rc = tmp_path / "psqlrc"
    rc.write_text(psqlrc + "\n")
    url = pg_env.url.set(drivername="postgresql").render_as_string(False)

    def run() -> subprocess.CompletedProcess[str]:
        args = [shell("psql"), "-q", "-d", url, "-f", str(tmp_path / "sql" / "a.sql")]
        return subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PSQLRC": str(rc)})

    done = run()
    assert done.returncode == 0, done.stderr
    assert cli("upgrade", "--tenant", "by_tool").exit_code == 0
    assert version_of(pg_env, "a") == version_of(pg_env, "by_tool") == (head(),)
    assert tenant_snapshot(pg_env, "a") == tenant_snapshot(pg_env, "by_tool")
    at_head = dump(pg_env, "a")
    again = run()
    assert again.returncode != 0 and f"tenant a is no longer at {START}" in again.stderr
    assert dump(pg_env, "a") == at_head


NOTES_REVISION = '''"""notes: text with a non-ASCII character and a backslash

Revision ID: notes
Revises: {head}
"""
from alembic import op

revision = "notes"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE notes (body text)")
    op.execute("INSERT INTO notes VALUES ('caf\\u00e9 a\\\\b')")


def downgrade() -> None:
    op.execute("DROP TABLE notes")
'''


@pytest.mark.postgres
def test_a_psqlrc_session_setting_changes_nothing_a_script_writes(pg_env, tmp_path, chain_copy):
    """A ~/.psqlrc may change how the server reads the script's text: `\\encoding LATIN1` (the
    script is UTF-8: `café` was stored as `cafÃ©`), `SET standard_conforming_strings = off` (a
    backslash escapes). The script starts from the settings the tool's own connection starts
    with, and reads as UTF-8: the rows are the tool's."""
    (chain_copy / "versions" / "notes.py").write_text(NOTES_REVISION.format(head=head()))
    assert cli("provision", "a", "by_tool").exit_code == 0
    for tenant in ("a", "by_tool"):
        migrate_to(pg_env, tenant, START, downgrade=True)
    render(tmp_path, "a")
    rc = tmp_path / "psqlrc"
    rc.write_text("\\encoding LATIN1\nSET standard_conforming_strings = off;\n")
    url = pg_env.url.set(drivername="postgresql").render_as_string(False)
    args = [shell("psql"), "-q", "-d", url, "-f", str(tmp_path / "sql" / "a.sql")]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PSQLRC": str(rc)})
    assert done.returncode == 0, done.stderr
    assert cli("upgrade", "--tenant", "by_tool").exit_code == 0
    with pg_env.engine().connect() as conn:
        rows = [conn.exec_driver_sql(f'SELECT body FROM "{pg_env.namespace(t)}".notes').scalars().all() for t in ("a", "by_tool")]
    assert rows[0] == rows[1] == ["caf\u00e9 a\\b"]

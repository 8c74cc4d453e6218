"""One unreadable tenant never stops the fleet, reading commands stay read-only, and a crashed
writer's journal never blocks the rerun. Real SQLite files, real processes, real PostgreSQL roles.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import (
    DOCEX_2_9_10,
    STEPS,
    cli,
    corrupt,
    grant_read,
    migrate_to,
    recognised_as,
    reported,
    template_only_config,
    version_of,
)
from test_adoption import build_legacy, legacy_ddl

from docex_migrate.chain import SCRIPT_LOCATION_ENV, load_chain

HEAD = load_chain().head


def states(result) -> dict[str, dict]:
    return {r["tenant_id"]: r for r in json.loads(result.stdout)}


def crash_mid_write(path: Path) -> None:
    """An application process killed -9 in the middle of a write transaction whose pages
    spilled to the file: the rollback journal it leaves is hot."""
    code = (
        "import os, signal, sqlite3\n"
        f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "db.execute('PRAGMA cache_size = 1')\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "db.execute('CREATE TABLE scratch_rows (payload TEXT)')\n"
        "for _ in range(3000): db.execute('INSERT INTO scratch_rows VALUES (?)', ('x' * 500,))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert Path(f"{path}-journal").stat().st_size > 0


def test_a_hot_journal_left_by_a_killed_writer_does_not_block_status_or_the_rerun(sqlite_env):
    """Item 5: the bulk read opened files read-only, which cannot roll a hot journal back."""
    assert cli("provision", "acme", "globex").exit_code == 0
    migrate_to(sqlite_env, "globex", "s5_docex_2_8_4", downgrade=True)
    path = sqlite_env.workdir / sqlite_env.namespace("globex")
    crash_mid_write(path)

    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    assert {t: r["state"] for t, r in states(result).items()} == {"acme": "current", "globex": "behind"}
    assert not Path(f"{path}-journal").exists()  # rolled back, as any read-write open does
    with sqlite3.connect(path) as db:
        assert "scratch_rows" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    db.close()

    result = cli("upgrade", "--all-tenants")
    assert result.exit_code == 0, result.output
    assert version_of(sqlite_env, "globex") == (HEAD,)


def test_one_unreadable_tenant_is_its_own_failure_and_the_rest_carry_on(env):
    """Item 6: a corrupt file / a foreign version table made status, tenants and upgrade exit 2
    with nothing migrated."""
    assert cli("provision", "a1", "a2").exit_code == 0
    migrate_to(env, "a2", "s5_docex_2_8_4", downgrade=True)
    corrupt(env, "broken")

    result = cli("status", "--json")
    assert result.exit_code == 1, result.output
    rows = states(result)
    assert {t: r["state"] for t, r in rows.items()} == {"a1": "current", "a2": "behind", "broken": "unreadable"}
    expected = "file is not a database" if env.kind == "sqlite" else "has no version_num column"
    assert expected in rows["broken"]["error"]
    assert "error" not in rows["a1"]

    result = cli("tenants", "--json")
    assert result.exit_code == 0, result.output
    assert [r["tenant_id"] for r in json.loads(result.stdout)] == ["a1", "a2", "broken"]

    result = cli("upgrade", "--all-tenants", "--json")
    assert result.exit_code == 1, result.output
    actions = {r["tenant_id"]: (r["action"], r["message"]) for r in reported(result.stdout)}
    assert actions["a2"][0] == "upgraded" and actions["a1"][0] == "skipped"
    assert actions["broken"][0] == "failed" and expected in actions["broken"][1]
    assert version_of(env, "a2") == (HEAD,)

    result = cli("status")  # the human table names the problem on the tenant's line
    assert result.exit_code == 1
    assert any(line.startswith("broken") and "unreadable: " in line for line in result.stdout.splitlines())


def _docex_made_tenant(env, tenant_id: str) -> None:
    """A tenant as DocEX 2.9.10 creates it: its tables and indexes, no alembic_version."""
    build_legacy(env, tenant_id, legacy_ddl(env, DOCEX_2_9_10, tenant_id))


@pytest.mark.postgres
def test_status_works_with_a_role_that_may_only_read_and_creates_nothing(pg_env, reader_role, monkeypatch):
    """Items 6 and 9: status needed CREATE to recognise an unversioned tenant, and one schema
    the role may not read made it exit 2."""
    assert cli("provision", "ok1").exit_code == 0
    _docex_made_tenant(pg_env, "legacy")
    assert cli("provision", "secret").exit_code == 0
    grant_read(pg_env, reader_role, "ok1")
    grant_read(pg_env, reader_role, "legacy")  # "secret" stays unreadable to the role
    monkeypatch.setenv("DOCEX_DATABASE_URL", pg_env.url.set(username=reader_role, password=None).render_as_string(False))
    monkeypatch.setenv("DOCEX_CONFIG", str(template_only_config(pg_env)))
    with pg_env.engine().connect() as conn:
        before = set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars())

    result = cli("status", "--json")
    assert result.exit_code == 1, result.output
    rows = states(result)
    assert rows["ok1"]["state"] == "current"
    stamped = recognised_as(pg_env.settings, DOCEX_2_9_10)
    assert (rows["legacy"]["state"], rows["legacy"]["matches"], rows["legacy"]["adopt"]) == ("unversioned", stamped, "adopt")
    assert rows["secret"]["state"] == "unreadable"
    assert "permission denied for schema" in rows["secret"]["error"] and "GRANT USAGE" in rows["secret"]["error"]
    assert cli("tenants").exit_code == 0
    with pg_env.engine().connect() as conn:
        assert set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars()) == before


@pytest.mark.postgres
def test_without_shipped_snapshots_a_read_only_role_is_told_why_recognition_is_unavailable(
    pg_env, reader_role, monkeypatch, chain_copy
):
    (chain_copy / "snapshots.json").unlink()
    _docex_made_tenant(pg_env, "legacy")
    grant_read(pg_env, reader_role, "legacy")
    monkeypatch.setenv("DOCEX_DATABASE_URL", pg_env.url.set(username=reader_role, password=None).render_as_string(False))
    monkeypatch.setenv("DOCEX_CONFIG", str(template_only_config(pg_env)))
    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["state"], row["adopt"]) == ("unversioned", "unknown")
    assert "recognition needs CREATE" in row["error"]
    human = cli("status")
    assert human.exit_code == 0 and "unversioned (recognition needs CREATE" in human.stdout


@pytest.mark.released_head  # a revision newer than alembic/snapshots.json is not in it
def test_shipped_snapshots_equal_what_the_chain_produces(env):
    from docex_migrate import revision_snapshots

    chain = load_chain()
    kind = revision_snapshots.kind_of(env.settings)
    assert revision_snapshots.shipped(kind, chain) == revision_snapshots.compute(env.settings, chain)


def test_a_long_application_read_does_not_hold_an_sqlite_upgrade_past_lock_timeout(sqlite_env, monkeypatch):
    """Item 10: the commit waited up to --tenant-lock-wait for a reader, and meanwhile every new
    reader of the tenant failed with 'database is locked'."""
    monkeypatch.setenv(SCRIPT_LOCATION_ENV, str(STEPS))
    migrate_to(sqlite_env, "busy", "r1")
    path = sqlite_env.workdir / sqlite_env.namespace("busy")
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "db.execute('BEGIN'); db.execute('SELECT count(*) FROM applied').fetchall()\n"
            "print('reading', flush=True); time.sleep(15); db.execute('COMMIT')\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout.readline().strip() == "reading"
    try:
        started = time.monotonic()
        upgrade = subprocess.run(
            [sys.executable, "-m", "docex_migrate", "upgrade", "--tenant", "busy", "--lock-timeout", "1"],
            cwd=sqlite_env.workdir,
            env={**os.environ, SCRIPT_LOCATION_ENV: str(STEPS)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
        # The application reads again as soon as the upgrade has given up.
        with sqlite3.connect(path, timeout=0) as db:
            assert db.execute("SELECT step FROM applied").fetchall() == [("r1",)]
        db.close()
    finally:
        reader.kill()
        reader.communicate()
    assert upgrade.returncode == 1, upgrade.stderr
    assert took < 10, f"the upgrade waited {took:.1f} s for a reader with --lock-timeout 1"
    assert "database is locked" in upgrade.stdout and "--lock-timeout" in upgrade.stdout
    assert version_of(sqlite_env, "busy") == ("r1",)

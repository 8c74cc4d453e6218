"""deprovision: backup first, then the namespace is gone; refused without --yes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
import yaml
from helpers import cli, head_tables, reported, tenant_engine

from docex_migrate import api
from docex_migrate.backends.postgresql import driver_dump
from docex_migrate.errors import DocexMigrateError


def add_basket(env, tenant_id):
    engine = tenant_engine(env, tenant_id)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO docbasket VALUES ('bas_keep', 'invoices', NULL, '{\"a\": 1}', 'active', "
            "'2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        )
    engine.dispose()


def test_deprovision_writes_a_backup_then_removes_the_tenant(env):
    assert cli("provision", "acme_corp", "other").exit_code == 0
    add_basket(env, "acme_corp")
    result = cli("deprovision", "acme_corp", "--yes", "--json")
    assert result.exit_code == 0, result.output
    backup = env.workdir / reported(result.stdout)[0]["backup"]
    assert backup.parent == env.workdir / "backups"
    if env.kind == "sqlite":
        with sqlite3.connect(backup) as db:
            assert db.execute("SELECT name FROM docbasket").fetchall() == [("invoices",)]
        db.close()
        assert not (env.workdir / "storage/tenant_acme_corp").exists()
        assert (env.workdir / "storage").is_dir()  # the template's own directory stays
    else:
        text = backup.read_text()
        assert "CREATE TABLE" in text and "bas_keep" in text
    rows = json.loads(cli("status", "--json").stdout)
    assert [r["tenant_id"] for r in rows] == ["other"]


def test_deprovision_refuses_without_yes_and_for_missing_tenants(env):
    cli("provision", "acme_corp")
    before = env.everything()
    result = cli("deprovision", "acme_corp")
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert env.everything() == before
    result = cli("deprovision", "ghost", "--yes")
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = cli("deprovision", "Bad;Id", "--yes")
    assert result.exit_code == 2 and "invalid tenant id" in result.stderr
    assert env.everything() == before


def test_no_backup_writes_nothing(env):
    cli("provision", "acme_corp")
    result = cli("deprovision", "acme_corp", "--yes", "--no-backup")
    assert result.exit_code == 0
    assert "no backup written" in result.stdout
    assert not (env.workdir / "backups").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--no-backup", "--backup-dir", "kept"], "--no-backup and --backup-dir 'kept' exclude each other"),
        (["--backup-dir", ""], "--backup-dir is empty"),
        (["--backup-dir", "  "], "--backup-dir is empty"),
    ],
)
def test_a_backup_directory_with_no_backup_or_empty_is_refused_before_anything(env, args, says):
    """Attack on issue 24: `--no-backup --backup-dir DIR` dropped the tenant without the backup
    the operator named a place for, and `--backup-dir ''` wrote it into the working directory."""
    cli("provision", "acme_corp")
    before = env.everything()
    result = cli("deprovision", "acme_corp", "--yes", *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert says in line, line
    assert env.everything() == before
    assert not (env.workdir / "kept").exists() and not list(env.workdir.glob("*.db"))


@pytest.mark.postgres
def test_driver_dump_restores_without_pg_dump(pg_env):
    """The fallback dump (no pg_dump installed) is valid SQL that recreates tables and rows."""
    cli("provision", "acme_corp")
    add_basket(pg_env, "acme_corp")
    schema = pg_env.namespace("acme_corp")
    with pg_env.engine().connect() as conn:
        dump = driver_dump(conn, schema)
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        conn.exec_driver_sql(dump)
    with pg_env.engine().connect() as conn:
        basket = conn.execute(sa.text(f'SELECT name, storage_config::text FROM "{schema}".docbasket')).one()
        tables = conn.execute(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": schema}).scalar()
    assert tuple(basket) == ("invoices", '{"a": 1}')
    assert tables == len(head_tables()) + 1  # and alembic_version


# --- data-loss defects: what is backed up is exactly what is dropped ------------------------


def _backup_rows(env, backup) -> str:
    """The backup's contents as text: the SQL dump, or the SQLite copy's basket ids."""
    if env.kind == "sqlite":
        with sqlite3.connect(backup) as db:
            ids = [r[0] for r in db.execute("SELECT id FROM docbasket ORDER BY id")]
        db.close()
        return " ".join(ids)
    return backup.read_text()


def _insert_basket_sql(basket_id: str) -> str:
    return (
        f"INSERT INTO docbasket VALUES ('{basket_id}', '{basket_id}', NULL, '{{}}', 'active', "
        "'2024-01-01 00:00:00', '2024-01-01 00:00:00')"
    )


def _wait_for_a_lock_wait(env, app_pid: int | None) -> None:
    """Until some other session of this database waits for a lock (PostgreSQL), or a moment
    (SQLite: a waiting writer cannot be observed from outside; the backup would be written by then)."""
    if env.kind == "sqlite":
        time.sleep(1.5)
        return
    with env.engine().connect() as conn:
        for _ in range(200):
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> :app"
                ),
                {"app": app_pid},
            ).scalar()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("deprovision never waited for the application's transaction")


def test_a_row_committed_while_deprovision_runs_is_in_the_backup(env):
    """An application transaction that commits while deprovision is under way must end up in
    the backup (deprovision waits for it, backs up, and drops under the same lock); before,
    the backup was taken first and the drop waited for the commit: the row was in neither."""
    cli("provision", "acme_corp")
    if env.kind == "sqlite":
        app = sqlite3.connect(env.namespace("acme_corp"), isolation_level=None)
        app.execute("BEGIN IMMEDIATE")
        app_pid = None
    else:
        app = psycopg.connect(
            env.url.set(drivername="postgresql").render_as_string(hide_password=False),
            options=f"-csearch_path={env.namespace('acme_corp')}",
        )
        app_pid = app.info.backend_pid
    app.execute(_insert_basket_sql("bas_late"))
    outcome = {}

    def deprovision():
        try:
            outcome["done"] = api.deprovision(env.settings, "acme_corp", backup_dir=env.workdir / "backups")
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=deprovision)
    worker.start()
    try:
        _wait_for_a_lock_wait(env, app_pid)
        app.execute("COMMIT")
    finally:
        app.close()  # done with the tenant (SQLite: deprovision waits for its connections to close)
        worker.join(60)
    assert "error" not in outcome, outcome
    assert not env.exists("acme_corp")
    assert "bas_late" in _backup_rows(env, outcome["done"].backup)


@pytest.mark.postgres
def test_an_application_holding_the_tables_makes_deprovision_refuse_after_lock_timeout(pg_env):
    """A write transaction that stays open longer than lock_timeout: deprovision fails with
    one clear message, drops nothing and leaves no backup behind."""
    cli("provision", "acme_corp")
    app = psycopg.connect(
        pg_env.url.set(drivername="postgresql").render_as_string(hide_password=False),
        options=f"-csearch_path={pg_env.namespace('acme_corp')}",
    )
    try:
        app.execute(_insert_basket_sql("bas_open"))
        settings = replace(pg_env.settings, timeouts=replace(pg_env.settings.timeouts, lock_timeout=0.5))
        with pytest.raises(DocexMigrateError, match="in use") as refused:
            api.deprovision(settings, "acme_corp", backup_dir=pg_env.workdir / "backups")
        assert refused.value.exit_code == 1
    finally:
        app.rollback()
        app.close()
    assert pg_env.exists("acme_corp")
    assert not (pg_env.workdir / "backups").exists()


@pytest.mark.postgres
def test_an_open_application_connection_cannot_write_into_the_dropped_tenant(pg_env):
    """A connection the application opened before deprovision and writes with afterwards must
    get an error, never a silent commit into a dropped schema. (SQLite refuses to deprovision
    while such a connection is open: test_deprovision_is_refused_while_another_connection_has_the_file_open.)"""
    env = pg_env
    cli("provision", "acme_corp")
    app = psycopg.connect(pg_env_url(env), options=f"-csearch_path={env.namespace('acme_corp')}", autocommit=True)
    try:
        assert cli("deprovision", "acme_corp", "--yes").exit_code == 0
        with pytest.raises(Exception, match="does not exist"):
            app.execute("BEGIN")
            app.execute(_insert_basket_sql("bas_lost"))
            app.execute("COMMIT")
    finally:
        app.close()


def pg_env_url(env) -> str:
    return env.url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.postgres
def test_deprovision_refuses_when_objects_outside_the_schema_depend_on_it(pg_env):
    """A view in another schema reading two tenants and a foreign key from another schema's
    table: DROP SCHEMA ... CASCADE removed both. Now: refused, exit 1, both named, nothing
    dropped, no backup left behind."""
    cli("provision", "acme_corp", "globex")
    add_basket(pg_env, "acme_corp")
    acme, globex = pg_env.namespace("acme_corp"), pg_env.namespace("globex")
    reports = f"reports_{uuid.uuid4().hex[:8]}"
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{reports}"')
        conn.exec_driver_sql(
            f'CREATE VIEW "{reports}".all_baskets AS SELECT id FROM "{acme}".docbasket '
            f'UNION ALL SELECT id FROM "{globex}".docbasket'
        )
        conn.exec_driver_sql(f'CREATE TABLE "{reports}".pinned (basket_id varchar(36) REFERENCES "{acme}".docbasket(id))')
        conn.exec_driver_sql(f"INSERT INTO \"{reports}\".pinned VALUES ('bas_keep')")
    before = pg_env.everything()
    result = cli("deprovision", "acme_corp", "--yes")
    assert result.exit_code == 1, result.output
    assert f"{reports}.all_baskets" in result.stderr and f"{reports}.pinned" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert pg_env.everything() == before and pg_env.exists("acme_corp")
    with pg_env.engine().connect() as conn:
        assert conn.execute(sa.text(f'SELECT count(*) FROM "{reports}".all_baskets')).scalar() == 1
        fks = conn.execute(
            sa.text("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = to_regclass(:t)"),
            {"t": f'"{reports}".pinned'},
        ).scalar()
        assert fks == 1
    assert not (pg_env.workdir / "backups").exists()  # refused before any backup was started
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{reports}" CASCADE')


@pytest.mark.postgres
@pytest.mark.parametrize("pg_dump_installed", [True, False], ids=["pg_dump", "driver-dump"])
def test_mixed_case_schema_template_backs_up_the_schema_it_drops(pg_env, monkeypatch, pg_dump_installed):
    """schema_template 'T..._{tenant_id}' next to a lower-case decoy schema with other data:
    pg_dump --schema case-folded the name and dumped the decoy, then the real schema was
    dropped with no backup of it. The backup must hold the real schema and its rows."""
    prefix = f"T{uuid.uuid4().hex[:8]}_"
    config = yaml.safe_load(pg_env.config_file.read_text())
    config["database"]["postgres"]["schema_template"] = prefix + "{tenant_id}"
    pg_env.config_file.write_text(yaml.safe_dump(config))
    if not pg_dump_installed:
        monkeypatch.setenv("PATH", str(pg_env.workdir / "no-bin"))
    assert cli("provision", "t001").exit_code == 0
    real, decoy = prefix + "t001", (prefix + "t001").lower()
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(_insert_basket_sql("bas_real").replace("docbasket", f'"{real}".docbasket'))
        conn.exec_driver_sql(f'CREATE SCHEMA "{decoy}"')
        conn.exec_driver_sql(f'CREATE TABLE "{decoy}".docbasket AS SELECT * FROM "{real}".docbasket WHERE false')
        conn.exec_driver_sql(
            f"INSERT INTO \"{decoy}\".docbasket SELECT 'bas_decoy', 'decoy', NULL, '{{}}', 'active', now(), now()"
        )
    result = cli("deprovision", "t001", "--yes", "--json")
    assert result.exit_code == 0, result.output
    text = (pg_env.workdir / reported(result.stdout)[0]["backup"]).read_text()
    assert ("PostgreSQL database dump" if pg_dump_installed else "written through the driver") in text
    assert f'CREATE SCHEMA "{real}"' in text or f'CREATE SCHEMA IF NOT EXISTS "{real}"' in text
    assert "bas_real" in text and "bas_decoy" not in text
    with pg_env.engine().connect() as conn:
        schemas = set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars())
    assert real not in schemas and decoy in schemas
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{decoy}" CASCADE')


def test_a_backup_that_cannot_be_written_leaves_the_tenant_untouched(env):
    """An unusable backup directory: exit 1, one line naming it, the tenant as it was."""
    cli("provision", "acme_corp")
    add_basket(env, "acme_corp")
    (env.workdir / "not-a-dir").write_text("")
    before = env.everything()
    result = cli("deprovision", "acme_corp", "--yes", "--backup-dir", "not-a-dir/backups")
    assert result.exit_code == 1, result.output
    assert "not-a-dir" in result.stderr and "nothing dropped" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert env.everything() == before and env.exists("acme_corp")


# --- a backup directory that cannot be written -------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory on a real read-only mount (EROFS, as a read-only volume gives), which even
    root cannot write: a read-only tmpfs."""
    target = tmp_path / "read-only"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.parametrize("below", [False, True], ids=["the-mount", "a-directory-to-create-on-it"])
def test_a_backup_directory_on_read_only_storage_leaves_the_tenant_untouched(env, read_only_dir, below):
    """--backup-dir on read-only storage ended in exit 2 and a bare 'OSError: [Errno 30]' (the
    cleanup of the backup never written failed too). Now: exit 1, one line naming the
    directory, nothing dropped, no traceback."""
    cli("provision", "acme_corp")
    add_basket(env, "acme_corp")
    target = read_only_dir / "backups" if below else read_only_dir
    before = env.everything() if env.kind == "postgres" else None
    result = cli("deprovision", "acme_corp", "--yes", "--backup-dir", str(target))
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in result.output and "OSError" not in line
    assert str(target) in line and "Read-only file system" in line and "nothing dropped" in line
    assert env.exists("acme_corp") and "bas_keep" in _backup_rows_of_tenant(env, "acme_corp")
    if before is not None:
        assert env.everything() == before


def _backup_rows_of_tenant(env, tenant_id: str) -> str:
    with tenant_engine(env, tenant_id).connect() as conn:
        return " ".join(conn.execute(sa.text("SELECT id FROM docbasket")).scalars())


def _as_nobody(args: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """The CLI (this checkout's code) run as the unprivileged user nobody, in ``workdir``."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the CLI as another user")
    python = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(workdir), "DOCEX_CONFIG": str(workdir / "docex.yaml")}
    readable = subprocess.run([*python, "-c", "import docex_migrate.cli"], cwd=workdir, env=environment, capture_output=True)
    if readable.returncode != 0:  # e.g. a checkout or virtualenv under a directory only root may enter
        pytest.skip(f"nobody cannot run this checkout: {readable.stderr.decode().strip().splitlines()[-1:]}")
    command = [*python, "-m", "docex_migrate", *args]
    return subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=120)


def test_a_backup_directory_the_user_may_not_write_leaves_the_tenant_untouched(env):
    """The sibling: a backup directory that exists but the user may not write (EACCES). As for
    read-only storage: exit 1, one line naming it, nothing dropped."""
    shared = Path(tempfile.mkdtemp(prefix="docex_deprovision_"))  # outside pytest's root-only tmp
    try:
        shared.chmod(0o755)
        shutil.copy(env.config_file, shared / "docex.yaml")
        (shared / "docex.yaml").chmod(0o644)
        (shared / "backups").mkdir(mode=0o755)  # root's: nobody may not write there
        os.chdir(shared)  # SQLite tenants live under the working directory
        cli("provision", "acme_corp")
        add_basket(env, "acme_corp")
        if env.kind == "sqlite":
            subprocess.run(["chown", "-R", "nobody:nogroup", str(shared / "storage")], check=True)
        result = _as_nobody(["deprovision", "acme_corp", "--yes", "--backup-dir", str(shared / "backups")], shared)
        assert result.returncode == 1, result.stdout + result.stderr
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert str(shared / "backups") in line and "Permission denied" in line and "nothing dropped" in line
        assert env.exists("acme_corp") and "bas_keep" in _backup_rows_of_tenant(env, "acme_corp")
        assert list((shared / "backups").iterdir()) == []
    finally:
        os.chdir(env.workdir)
        shutil.rmtree(shared)


# --- pg_dump connects as the driver does ----------------------------------------------------------

PASSWORD = "s3cr@t:/%#pw"  # every character a URL treats specially


def _recording_pg_dump(directory: Path, record: Path) -> None:
    """A stand-in pg_dump first on PATH: records its argv and environment, then runs the real one."""
    real = shutil.which("pg_dump")
    if real is None:
        pytest.skip("pg_dump is not installed")
    directory.mkdir()
    stand_in = directory / "pg_dump"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}) + '\\n')\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    )
    stand_in.chmod(0o755)


@pytest.mark.postgres
def test_pg_dump_connects_with_the_configs_ssl_and_other_options_and_the_password_in_its_environment(pg_env, monkeypatch):
    """pg_dump got --host/--port/--dbname/--username only: sslmode and every other option of the
    URL were dropped, so the password went out with no TLS requirement. Now it gets the
    driver's own parameters as a conninfo (no password in argv), the password in PGPASSWORD."""
    record = pg_env.workdir / "pg_dump.jsonl"
    _recording_pg_dump(pg_env.workdir / "bin", record)
    monkeypatch.setenv("PATH", f"{pg_env.workdir / 'bin'}{os.pathsep}{os.environ['PATH']}")
    url = pg_env.url.set(password=PASSWORD, query={"sslmode": "allow", "application_name": "docex_backup_test"})
    monkeypatch.setenv("DOCEX_DATABASE_URL", url.render_as_string(hide_password=False))
    assert cli("provision", "acme_corp").exit_code == 0
    add_basket(pg_env, "acme_corp")
    result = cli("deprovision", "acme_corp", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert "PostgreSQL database dump" in (pg_env.workdir / reported(result.stdout)[0]["backup"]).read_text()
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls  # the deprovision's, and the provision's head-schema dump
    for call in calls:
        assert not any(PASSWORD in arg for arg in call["argv"]), call["argv"]
        assert call["env"]["PGPASSWORD"] == PASSWORD
        dbname = call["argv"][call["argv"].index("--dbname") + 1]
        params = psycopg.conninfo.conninfo_to_dict(dbname)
        assert params["sslmode"] == "allow" and params["application_name"] == "docex_backup_test"
        assert (params["host"], params["dbname"], params["user"]) == (url.host, url.database, url.username)
        assert "password" not in params
    assert PASSWORD not in result.output
    ledger = cli("runs", "--json")  # the runs ledger names the database (its identity), never the password
    assert ledger.exit_code == 0 and "deprovision" in ledger.stdout and PASSWORD not in ledger.output


# --- SQLite: refused while another connection has the file open ----------------------------------

_HOLDER = """
import sqlite3, sys
app = sqlite3.connect(sys.argv[1], isolation_level=None)
app.execute("SELECT count(*) FROM docbasket").fetchall()  # idle now: no transaction open
print("open", flush=True)
sys.stdin.readline()
app.execute(sys.argv[2])
print("written", flush=True)
sys.stdin.readline()
app.close()
"""


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
@pytest.mark.parametrize("holder", ["another-process", "this-process"])
def test_deprovision_is_refused_while_another_connection_has_the_file_open(sqlite_env, journal_mode, holder):
    """An application connection left open (idle, no transaction) on a WAL-mode tenant: deprovision
    was acknowledged, the -wal and -shm files unlinked, and the application's next INSERT
    succeeded into the deleted file and was lost. Now refused (exit 1, one line saying another
    connection has it open, nothing dropped, no backup); the write lands in the tenant's file,
    and once the connection is closed deprovision goes ahead with that row in the backup."""
    env = sqlite_env
    assert cli("provision", "acme_corp").exit_code == 0
    path = str(Path(env.namespace("acme_corp")).resolve())
    setup = sqlite3.connect(path, isolation_level=None)
    assert setup.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone()[0] == journal_mode
    setup.close()
    insert = _insert_basket_sql("bas_written_while_open")
    if holder == "another-process":
        app = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, path, insert], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert app.stdout.readline().strip() == "open"
    else:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("SELECT count(*) FROM docbasket").fetchall()
    try:
        result = cli("deprovision", "acme_corp", "--yes", "--lock-timeout", "0.5")
        assert result.exit_code == 1, result.output
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in result.output
        assert "another connection has" in line and "open" in line and "nothing dropped" in line
        assert Path(path).is_file() and not (env.workdir / "backups").exists()
        if holder == "another-process":
            app.stdin.write("\n")
            app.stdin.flush()
            assert app.stdout.readline().strip() == "written"
        else:
            connection.execute(insert)
    finally:
        if holder == "another-process":
            app.stdin.write("\n")
            app.stdin.close()
            app.wait(30)
            app.stdout.close()
        else:
            connection.close()
    assert "bas_written_while_open" in _backup_rows_of_tenant(env, "acme_corp")  # in the tenant's file, not lost
    result = cli("deprovision", "acme_corp", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert "bas_written_while_open" in _backup_rows(env, env.workdir / reported(result.stdout)[0]["backup"])
    assert not Path(path).exists()


# An application that opens the tenant while deprovision is backing it up: it waits for the
# backup file to appear (deprovision creates it after its check for open connections), then
# opens the tenant and writes, as a DocEX worker picking up a request would.
_LATE_APP = """
import os, sqlite3, sys, time
backups, path = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 60
while not (os.path.isdir(backups) and os.listdir(backups)):
    if time.monotonic() > deadline:
        sys.exit("deprovision never started its backup")
    time.sleep(0.001)
app = sqlite3.connect(path, timeout=60, isolation_level=None)
app.execute("BEGIN IMMEDIATE")  # waits for deprovision's write lock, as the application's writes do
app.execute("INSERT INTO app_rows VALUES ('written after the open-connection check')")
app.execute("COMMIT")
print("acknowledged", app.execute("SELECT count(*) FROM app_rows").fetchone()[0], flush=True)
app.close()
"""


def test_a_wal_connection_opened_during_deprovision_backup_never_has_its_write_acknowledged_and_lost(sqlite_env, tmp_path):
    """#3 refuses deprovision while another connection has the file open, but checks only once,
    right after taking the write lock: an application that opens the tenant after that check
    (while the backup is being written: seconds for a large tenant) waits on the write lock,
    and when deprovision releases it (after deleting the file) commits into the deleted file.
    Its INSERT is acknowledged and is in neither the backup nor any file: lost (WAL mode, the one
    DocEX's concurrent workers use; in rollback-journal mode SQLite itself sees the file was
    unlinked and refuses the write: "attempt to write a readonly database"). Expected: a write the application saw committed is in the backup, or
    the tenant (and that row) stays."""
    env = sqlite_env
    assert cli("provision", "acme_corp").exit_code == 0
    path = str(Path(env.namespace("acme_corp")).resolve())
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = wal")
    setup.execute("CREATE TABLE app_rows (note TEXT)")
    setup.execute("CREATE TABLE attachments (body BLOB)")  # a tenant with documents: its backup takes a while
    setup.execute("BEGIN")
    for _ in range(400):
        setup.execute("INSERT INTO attachments VALUES (randomblob(200000))")
    setup.execute("COMMIT")
    setup.close()
    backups = tmp_path / "backups"
    app = subprocess.Popen([sys.executable, "-c", _LATE_APP, str(backups), path], stdout=subprocess.PIPE, text=True)
    try:
        result = cli("deprovision", "acme_corp", "--yes", "--backup-dir", str(backups), "--json")
        acknowledged = app.communicate(timeout=90)[0]
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    if "acknowledged" not in acknowledged:
        return  # the application's write failed: it knows, nothing was lost
    kept = []
    if Path(path).exists():
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            kept += [r[0] for r in db.execute("SELECT note FROM app_rows")]
    for backup in backups.iterdir():
        with closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as db:
            kept += [r[0] for r in db.execute("SELECT note FROM app_rows")]
    assert kept, f"the application's acknowledged write is lost (deprovision exit {result.exit_code}: {result.output})"


@pytest.mark.postgres
def test_deprovision_says_large_objects_the_tenant_points_to_are_neither_backed_up_nor_removed(pg_env):
    """Large objects are the database's (pg_largeobject), not the schema's: a tenant table's oid
    column pointing to one was dropped in silence, the object neither in the backup nor removed."""
    cli("provision", "acme_corp")
    schema = pg_env.namespace("acme_corp")
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".attachment (id int PRIMARY KEY, content oid)')
        blob = conn.execute(sa.text("SELECT lo_from_bytea(0, 'scanned invoice')")).scalar()
        conn.execute(sa.text(f'INSERT INTO "{schema}".attachment VALUES (1, :blob)'), {"blob": blob})
    result = cli("deprovision", "acme_corp", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert "attachment.content" in result.stderr and "large object" in result.stderr
    assert any("attachment.content" in w for w in reported(result.stdout)[0]["warnings"])
    with pg_env.engine().begin() as conn:  # still there: removing it is the operator's call
        assert conn.execute(sa.text("SELECT lo_get(:blob)"), {"blob": blob}).scalar() == b"scanned invoice"
        conn.execute(sa.text("SELECT lo_unlink(:blob)"), {"blob": blob})
    cli("provision", "globex")
    quiet = cli("deprovision", "globex", "--yes")
    assert quiet.exit_code == 0 and "large object" not in quiet.stderr


def test_deprovision_called_from_python_records_its_run_in_the_ledger(env):
    """api.deprovision records itself, as the CLI's deprovision does: the run is in `runs`, its
    tenant deprovisioned from its revision, the backup named in its message (undo refuses it)."""
    (provisioned,) = api.provision(env.settings, ["acme_corp"])
    done = api.deprovision(env.settings, "acme_corp", backup_dir=env.workdir / "backups")
    (info,) = [r for r in api.runs(env.settings) if r.command == "deprovision"]
    assert info.state == "finished" and info.counts == {"deprovisioned": 1} and info.selection == "acme_corp"
    (tenant,) = api.show_run(env.settings, info.run_id).tenants
    assert (tenant.tenant_id, tenant.action, tenant.to_revision) == ("acme_corp", "deprovisioned", None)
    assert tenant.from_revision == provisioned.to_revision and str(done.backup) in tenant.message


def test_a_backup_is_its_owners_alone_and_named_by_its_absolute_path(env):
    """Issue 24: backups were written 0644 (a tenant's whole data readable by every local user)
    and the ledger kept their path relative to the working directory, so undo's advice ("restore
    it from backup in backups/...") was wrong from anywhere else."""
    cli("provision", "acme_corp", "other")
    result = cli("deprovision", "acme_corp", "--yes", "--json")
    assert result.exit_code == 0, result.output
    backup = Path(reported(result.stdout)[0]["backup"])
    assert backup.is_absolute() and backup.parent == env.workdir / "backups"
    assert (backup.stat().st_mode & 0o777, backup.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    (run,) = [r for r in json.loads(cli("runs", "--json").stdout) if r["command"] == "deprovision"]
    undo = cli("undo", run["run_id"], "--yes")
    assert undo.exit_code == 2 and f"restore acme_corp --from {backup}`" in undo.stderr, undo.output

    shared = env.workdir / "shared-backups"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)  # whatever the umask: the operator's choice, left alone
    result = cli("deprovision", "other", "--yes", "--json", "--backup-dir", str(shared))
    assert result.exit_code == 0, result.output
    backup = Path(reported(result.stdout)[0]["backup"])
    assert (backup.stat().st_mode & 0o777, shared.stat().st_mode & 0o777) == (0o600, 0o755)

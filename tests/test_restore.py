"""restore TENANT --from BACKUP: a deprovisioned tenant brought back, data and revision, from the
backup its deprovision recorded; every refusal changes nothing; the advice deprovision and undo
print is a command that works as printed (issue 24)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import cli, head, report_of, tenant_engine, tenant_snapshot

from docex_migrate import tenants
from docex_migrate.ledger import Ledger
from docex_migrate.ledger import run_tenants as ledger_tenants

S6 = "s6_docex_2_8_8"


def _fill(env, tenant_id: str) -> None:
    """Rows whose text needs care in a dump: tabs, newlines, backslashes, quotes, non-ASCII."""
    engine = tenant_engine(env, tenant_id)
    with engine.begin() as conn:
        for i, name in enumerate(["plain", "tab\there", "new\nline", "back\\slash", "quote'd", "ünïcødé €"]):
            conn.execute(
                sa.text(
                    "INSERT INTO docbasket (id, name, description, storage_config, status, created_at, updated_at) "
                    "VALUES (:id, :name, :description, :config, 'active', '2024-01-01 00:00:00', '2024-01-02 00:00:00')"
                ),
                {"id": f"bas_{i}", "name": name, "description": None if i % 2 else name * 3, "config": '{"k": [1, 2]}'},
            )
    engine.dispose()


def _rows(env, tenant_id: str) -> dict[str, list[tuple]]:
    """Every row of every table of the tenant, as text, sorted: what must come back exactly."""
    engine = tenant_engine(env, tenant_id)
    try:
        with engine.connect() as conn:
            schema = None if env.kind == "sqlite" else env.namespace(tenant_id)
            tables = sa.inspect(conn).get_table_names(schema=schema)
            found = {}
            for name in tables:
                table = sa.Table(name, sa.MetaData(), autoload_with=conn, schema=schema)
                found[name] = sorted(tuple(str(v) for v in row) for row in conn.execute(table.select()))
            return found
    finally:
        engine.dispose()


def _deprovision(tenant_id: str) -> tuple[Path, str]:
    """Deprovision through the CLI: the backup and the restore command it printed."""
    result = cli("deprovision", tenant_id, "--yes")
    assert result.exit_code == 0, result.output
    backup = Path(re.search(r"backup in (\S+)", result.stdout)[1])
    advice = re.search(r"to bring it back: (.+)", result.stdout)[1]
    return backup, advice


def _ledger_state(env) -> list:
    runs = cli("runs", "--json")
    assert runs.exit_code == 0, runs.output
    return json.loads(runs.stdout)


def test_restore_round_trips_a_tenant_with_data(env):
    assert cli("provision", "acme_corp", "other").exit_code == 0
    assert cli("downgrade", S6, "--tenant", "acme_corp", "--yes").exit_code == 0
    _fill(env, "acme_corp")
    rows, catalog = _rows(env, "acme_corp"), tenant_snapshot(env, "acme_corp")
    assert len(rows["docbasket"]) == 6
    backup, _ = _deprovision("acme_corp")
    assert not env.exists("acme_corp")

    result = cli("restore", "acme_corp", "--from", str(backup), "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["command"] == "restore" and done["target"] == S6 and done["counts"] == {"restored": 1}
    assert done["behind_head"] is True and done["run_id"] and (done["format"], done["ok"], done["plan"]) == (1, True, False)
    (tenant,) = done["tenants"]
    assert tenant["backup"] == str(backup)
    assert (tenant["tenant_id"], tenant["action"], tenant["to_revision"]) == ("acme_corp", "restored", S6)
    assert (
        f"docex-migrate --config {env.config_file} upgrade --tenant acme_corp" in result.stderr
    )  # behind the head: what to run next

    assert _rows(env, "acme_corp") == rows
    assert tenant_snapshot(env, "acme_corp") == catalog
    status = {r["tenant_id"]: r for r in json.loads(cli("status", "--json").stdout)}
    assert (status["acme_corp"]["revision"], status["acme_corp"]["state"]) == (S6, "behind")
    assert cli("verify", "--tenant", "acme_corp").exit_code == 0  # exactly its revision
    (run,) = [r for r in _ledger_state(env) if r["command"] == "restore"]
    assert run["run_id"] == done["run_id"] and run["counts"] == {"restored": 1} and run["target"] == S6

    # and it goes on like any tenant
    assert cli("upgrade", "--tenant", "acme_corp").exit_code == 0
    assert _rows(env, "acme_corp")["docbasket"] == rows["docbasket"]


def _run_printed(env, command: str) -> subprocess.CompletedProcess[str]:
    """A `docex-migrate ...` line run as a user would paste it, from another directory (its
    paths are absolute), without $DOCEX_CONFIG: what it names is all it has."""
    argv = shlex.split(command)
    assert argv[0] == "docex-migrate"
    environ = {k: v for k, v in os.environ.items() if k != "DOCEX_CONFIG"}
    elsewhere = env.workdir / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    cwd = env.workdir if env.kind == "sqlite" else elsewhere  # SQLite's template is relative to the working directory
    return subprocess.run(
        [sys.executable, "-m", "docex_migrate", *argv[1:]], cwd=cwd, env=environ, capture_output=True, text=True
    )


def test_deprovisions_advice_restores_the_tenant_when_run_as_printed(env):
    cli("provision", "acme_corp")
    _fill(env, "acme_corp")
    rows = _rows(env, "acme_corp")
    backup, advice = _deprovision("acme_corp")
    assert f"restore acme_corp --from {backup}" in advice and str(env.config_file) in advice
    done = _run_printed(env, advice)
    assert done.returncode == 0, done.stderr
    assert _rows(env, "acme_corp") == rows


def test_undos_advice_for_a_deprovision_restores_the_tenant_when_run_as_printed(env):
    cli("provision", "acme_corp")
    _fill(env, "acme_corp")
    rows = _rows(env, "acme_corp")
    backup, _ = _deprovision("acme_corp")
    (run,) = [r for r in _ledger_state(env) if r["command"] == "deprovision"]
    undo = cli("undo", run["run_id"], "--yes")
    assert undo.exit_code == 2 and "restore it with `docex-migrate" in undo.stderr, undo.output
    advice = re.search(r"`(docex-migrate [^`]*restore[^`]*)`", undo.stderr)[1]
    assert str(backup) in advice
    done = _run_printed(env, advice)
    assert done.returncode == 0, done.stderr
    assert _rows(env, "acme_corp") == rows


def _refused(env, *args: str, says: str) -> None:
    """restore refused: exit 2, one line saying ``says``, nothing changed (namespaces, files, ledger)."""
    before, runs = env.everything(), _ledger_state(env)
    result = cli("restore", *args)
    assert result.exit_code == 2, result.output
    assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    assert env.everything() == before and _ledger_state(env) == runs


def test_restore_refuses_a_tenant_that_exists(env):
    cli("provision", "acme_corp")
    backup, _ = _deprovision("acme_corp")
    cli("provision", "acme_corp")
    _refused(env, "acme_corp", "--from", str(backup), says="exists")


def test_restore_refuses_another_tenants_backup_however_it_is_named(env):
    """A look-alike: acme_corp's backup, even copied under globex's name, is never globex."""
    cli("provision", "acme_corp", "globex")
    backup, _ = _deprovision("acme_corp")
    _refused(env, "globex_corp", "--from", str(backup), says="was taken from tenant 'acme_corp'")
    renamed = backup.with_name(backup.name.replace("acme_corp", "globex_corp"))
    shutil.copyfile(backup, renamed)
    _refused(env, "globex_corp", "--from", str(renamed), says="was taken from tenant 'acme_corp'")
    assert not env.exists("globex_corp")
    advice = re.search(r"`(docex-migrate [^`]+)`", cli("restore", "globex_corp", "--from", str(backup)).stderr)[1]
    assert str(env.config_file) in advice  # the command it names instead, which works as printed
    assert _run_printed(env, advice).returncode == 0 and env.exists("acme_corp")


def test_restore_refuses_missing_truncated_and_edited_backups(env):
    cli("provision", "acme_corp")
    _fill(env, "acme_corp")
    backup, _ = _deprovision("acme_corp")
    _refused(env, "acme_corp", "--from", str(backup.with_name("nope.db")), says="does not exist")
    _refused(env, "acme_corp", "--from", str(backup.parent), says="is not a file")
    truncated = backup.with_name("truncated" + backup.suffix)
    truncated.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    _refused(env, "acme_corp", "--from", str(truncated), says="matches no backup recorded")
    original = backup.read_bytes()
    edited = original.replace(b"plain", b"PLAIN", 1)
    assert edited != original
    backup.write_bytes(edited)  # in place: the path is the one recorded, the contents are not
    _refused(env, "acme_corp", "--from", str(backup), says="changed since deprovision run")
    backup.write_bytes(original)
    assert cli("restore", "acme_corp", "--from", str(backup)).exit_code == 0


def test_restore_refuses_a_revision_the_chain_does_not_know(env):
    cli("provision", "acme_corp")
    engine = tenant_engine(env, "acme_corp")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'zz_from_the_future'"))
    engine.dispose()
    backup, _ = _deprovision("acme_corp")
    _refused(env, "acme_corp", "--from", str(backup), says="which this chain does not know")


def test_restore_refuses_bad_input_before_anything(env):
    cli("provision", "acme_corp")
    backup, _ = _deprovision("acme_corp")
    _refused(env, "Bad;Id", "--from", str(backup), says="invalid tenant id")
    result = cli("restore", "acme_corp")
    assert result.exit_code == 2 and "--from" in result.output


def _forge(env, backup: Path, contents: bytes) -> None:
    """A backup that passes the ledger's check but does not load: ``contents`` written over it
    and recorded as its SHA-256 (as if deprovision had written a faulty backup)."""
    from docex_migrate.backends.base import sha256_of  # here: the module's tests run (and fail) without it

    backup.write_bytes(contents)
    place = env.backend.ledger()
    ledger = Ledger.for_writing(place, create=False)
    try:
        with ledger.connection.begin():
            ledger.connection.execute(
                ledger_tenants.update()
                .where(ledger_tenants.c.backup.is_not(None))
                .values(backup=json.dumps({"path": str(backup), "sha256": sha256_of(backup)}))
            )
    finally:
        ledger.close()


def test_a_backup_that_fails_to_load_leaves_no_half_tenant(env):
    cli("provision", "acme_corp")
    _fill(env, "acme_corp")
    backup, _ = _deprovision("acme_corp")
    original = backup.read_bytes()
    if env.kind == "sqlite":
        broken = original[:4096] + b"\xff" * 4096 + original[8192:]  # the second page garbage
    else:
        text = original.decode()
        cut = text.index("\\.\n") - 1  # inside the first COPY's rows: a row that is not one
        broken = (text[:cut] + "\tnot\ta\trow\twith\ttoo\tmany\tcolumns\tfor\tany\ttable\there\n" + text[cut:]).encode()
    _forge(env, backup, broken)
    _refused(env, "acme_corp", "--from", str(backup), says="nothing restored")
    assert not env.exists("acme_corp")
    if env.kind == "sqlite":
        assert not (env.workdir / "storage" / "tenant_acme_corp").exists()  # its directory went with it


@pytest.mark.postgres
def test_a_backup_that_ends_the_transaction_commits_nothing(pg_env):
    """A statement of the backup that ends the tenant's transaction (here a COMMIT and a
    schema after it, recorded as if deprovision had written them) is refused before it runs:
    no tenant, no schema after it (found by an attack: it used to commit what came before)."""
    cli("provision", "acme_corp")
    _fill(pg_env, "acme_corp")
    backup, _ = _deprovision("acme_corp")
    _forge(pg_env, backup, backup.read_bytes() + b"\nCOMMIT;\nCREATE SCHEMA restore_marker;\n")
    _refused(pg_env, "acme_corp", "--from", str(backup), says="ends the transaction")
    with pg_env.engine().connect() as conn:
        schemas = set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars())
    assert not {"restore_marker", pg_env.namespace("acme_corp")} & schemas


def test_undo_of_a_restore_drops_nothing(env):
    cli("provision", "acme_corp")
    _fill(env, "acme_corp")
    rows = _rows(env, "acme_corp")
    backup, _ = _deprovision("acme_corp")
    done = json.loads(cli("restore", "acme_corp", "--from", str(backup), "--json").stdout)
    undo = cli("undo", done["run_id"], "--yes")
    assert undo.exit_code == 2 and "deprovision acme_corp --yes" in undo.stderr, undo.output
    assert _rows(env, "acme_corp") == rows


@pytest.mark.postgres
def test_restore_of_a_driver_dump(pg_env, monkeypatch):
    """Without pg_dump, deprovision writes its backup through the driver: that restores too."""
    cli("provision", "acme_corp")
    _fill(pg_env, "acme_corp")
    rows = _rows(pg_env, "acme_corp")
    with monkeypatch.context() as patched:
        patched.setattr(shutil, "which", lambda name, *a, **k: None)
        backup, _ = _deprovision("acme_corp")
    assert "COPY " not in backup.read_text() and "INSERT INTO" in backup.read_text()
    result = cli("restore", "acme_corp", "--from", str(backup))
    assert result.exit_code == 0, result.output
    assert _rows(pg_env, "acme_corp") == rows
    assert f"at revision {head()}" in result.output


class Running:
    """docex-migrate ARGS as a process of its own (the installed package, the test's config and
    working directory), its stdout and stderr read as they come."""

    def __init__(self, env, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "docex_migrate", *args],
            cwd=env.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=lambda s=stream, into=into: into.extend(s), daemon=True)
            for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not ready():
            assert self.proc.poll() is None, f"it ended before {what}: {self.stderr}"
            assert time.monotonic() < deadline, f"never {what}: {self.stderr}"
            time.sleep(0.05)

    def signal_when(self, ready: Callable[[], bool], what: str, signum: int) -> None:
        """Send ``signum`` once ``ready``, and give it half a second to be handled."""
        try:
            self.wait_until(ready, what)
        except BaseException:
            self.proc.kill()
            self.finish()
            raise
        self.proc.send_signal(signum)
        time.sleep(0.5)

    def finish(self) -> int:
        try:
            self.proc.wait(timeout=90)
        finally:
            self.proc.kill()
            self.proc.wait()
            for reader in self._readers:
                reader.join(10)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        return self.proc.returncode


@contextlib.contextmanager
def ledger_locked(env) -> Iterator[None]:
    """Hold the run ledger's write lock as another session would (reads go on): a command's
    first write to the ledger waits for it, which makes "its change has committed, its run is
    not recorded yet" a point a test can stop it at."""
    if env.kind == "sqlite":
        db = sqlite3.connect(tenants.ledger_file(env.settings.sqlite.path_template), isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.close()
        return
    engine = env.engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'LOCK TABLE "{tenants.LEDGER_SCHEMA}".runs IN EXCLUSIVE MODE'))
            yield
            conn.rollback()
    finally:
        engine.dispose()


def waits_for_the_ledger(env, running: Running) -> bool:
    """Whether the command waits for the ledger's lock: SQLite says so on stderr; PostgreSQL's
    wait is in pg_locks (the whole server's: only this test's database counts)."""
    if env.kind == "sqlite":
        return tenants.LEDGER_FILE in running.stderr and "waiting up to" in running.stderr
    engine = env.engine()
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    )
                ).scalar()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_the_restore_committed_exits_0_and_the_run_is_recorded(env, signum):
    """The signal lands once the tenant is restored (committed) and its run is being recorded
    (the ledger's lock is held meanwhile): the restore is complete, so the command finishes
    recording and printing, exits 0, and says the signal came after the work was done; --json,
    the ledger and the tenant all say restored."""
    cli("provision", "acme_corp")
    _fill(env, "acme_corp")
    rows = _rows(env, "acme_corp")
    backup, _ = _deprovision("acme_corp")
    with ledger_locked(env):
        restore = Running(env, "restore", "acme_corp", "--from", str(backup), "--json")
        restore.signal_when(lambda: env.exists("acme_corp") and waits_for_the_ledger(env, restore), "restored", signum)
    code = restore.finish()
    name = signal.Signals(signum).name
    assert code == 0, restore.stderr
    if env.kind == "sqlite":  # the holder named is this test's session, never the waiting command itself
        assert f"write-locked by pid {os.getpid()} " in restore.stderr, restore.stderr
    report = report_of(restore.stdout)
    assert (report["ok"], report["interrupted"], report["counts"]) == (True, None, {"restored": 1})
    assert f"{name} arrived after the restore of acme_corp had committed: it stopped nothing" in restore.stderr
    assert f"recorded in run {report['run_id']}" in restore.stderr
    (run,) = [r for r in _ledger_state(env) if r["command"] == "restore"]
    assert (run["run_id"], run["state"], run["counts"]) == (report["run_id"], "finished", {"restored": 1})
    assert _rows(env, "acme_corp") == rows


@pytest.mark.postgres
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_restore_leaves_no_tenant_and_no_run(pg_env, signum):
    """Stopped while it waits for the tenant's lock (another run holds it): exit 128 + signal,
    no schema, nothing in the ledger (it changed nothing, so it records nothing, as an upgrade
    with nothing to do); --json is the one report, interrupted, the tenant not-run; the
    command it advises then restores."""
    cli("provision", "acme_corp")
    _fill(pg_env, "acme_corp")
    rows = _rows(pg_env, "acme_corp")
    backup, _ = _deprovision("acme_corp")
    runs = _ledger_state(pg_env)
    holder = pg_env.engine()
    with holder.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:s, 0))"), {"s": pg_env.namespace("acme_corp")})
        restore = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "docex_migrate",
                "restore",
                "acme_corp",
                "--from",
                str(backup),
                "--tenant-lock-wait",
                "300",
                "--json",
            ],
            cwd=pg_env.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # pg_locks is the whole server's: only a wait in this test's database is the restore's
            waiting = sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            deadline = time.monotonic() + 60
            while conn.execute(waiting).scalar() == 0:
                assert time.monotonic() < deadline and restore.poll() is None, restore.communicate()
                time.sleep(0.2)
            restore.send_signal(signum)
            out, err = restore.communicate(timeout=60)
        finally:
            restore.kill()
            restore.wait()
        conn.rollback()
    holder.dispose()
    assert restore.returncode == 128 + signum, err
    assert not pg_env.exists("acme_corp") and _ledger_state(pg_env) == runs
    name = signal.Signals(signum).name
    report = report_of(out)
    assert (report["command"], report["ok"], report["interrupted"], report["run_id"]) == ("restore", False, name, None)
    (tenant,) = report["tenants"]
    assert (tenant["tenant_id"], tenant["action"], tenant["to_revision"]) == ("acme_corp", "not-run", None)
    assert "rolled back, nothing restored" in tenant["message"]
    advice = re.search(
        rf"interrupted by {name}: the restore was rolled back: nothing was restored and nothing recorded; to finish, run `(.+)`",
        err,
    )
    assert advice, err
    again = shlex.split(advice[1])
    assert again[0] == "docex-migrate"
    assert cli(*again[1:]).exit_code == 0
    assert _rows(pg_env, "acme_corp") == rows


def test_tenants_with_identical_backups_each_restore_from_their_own(env):
    """Two fresh SQLite tenants copied from one head file can have byte-identical backups: each
    one's own backup still restores it (the ledger's record for that tenant is the one used)."""
    cli("provision", "twin_a", "twin_b")
    backup_a, _ = _deprovision("twin_a")
    backup_b, _ = _deprovision("twin_b")
    for tenant_id, backup in (("twin_a", backup_a), ("twin_b", backup_b)):
        result = cli("restore", tenant_id, "--from", str(backup))
        assert result.exit_code == 0, result.output


def test_restores_and_undos_advice_runs_as_printed(env):
    """Every command restore and undo of a restore print carries the configuration file: run from
    another directory without $DOCEX_CONFIG, each works as printed."""
    cli("provision", "acme_corp")
    assert cli("downgrade", S6, "--tenant", "acme_corp", "--yes").exit_code == 0
    _fill(env, "acme_corp")
    rows = _rows(env, "acme_corp")
    backup, _ = _deprovision("acme_corp")
    result = cli("restore", "acme_corp", "--from", str(backup), "--json")
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    upgrade = re.search(r"bring it there with `([^`]+)`", result.stderr)[1]
    show = re.search(r"recorded: `([^`]+)`", result.stderr)[1]
    for advice in (upgrade, show):
        assert shlex.split(advice)[1:3] == ["--config", str(env.config_file)], advice

    shown = _run_printed(env, show)
    assert shown.returncode == 0 and run_id in shown.stdout, shown.stderr
    upgraded = _run_printed(env, upgrade)
    assert upgraded.returncode == 0, upgraded.stderr
    status = {r["tenant_id"]: r for r in json.loads(cli("status", "--json").stdout)}
    assert status["acme_corp"]["revision"] == head()
    assert _rows(env, "acme_corp")["docbasket"] == rows["docbasket"]

    undo = cli("undo", run_id, "--yes")
    assert undo.exit_code == 2, undo.output
    advice = re.search(r"`(docex-migrate [^`]*deprovision[^`]*)`", undo.stderr)[1]
    assert str(env.config_file) in advice
    dropped = _run_printed(env, advice)
    assert dropped.returncode == 0, dropped.stderr
    assert not env.exists("acme_corp")


def test_a_missing_tenants_advice_runs_as_printed(env):
    result = cli("upgrade", "--tenant", "ghost")
    assert result.exit_code == 1, result.output
    advice = re.search(r"run `(docex-migrate [^`]*provision[^`]*)` first", result.output)[1]
    assert str(env.config_file) in advice
    done = _run_printed(env, advice)
    assert done.returncode == 0, done.stderr
    assert env.exists("ghost")


def test_undo_of_a_deprovision_names_the_restore_that_brought_the_tenant_back(env):
    cli("provision", "acme_corp")
    backup, _ = _deprovision("acme_corp")
    (deprovision,) = [r for r in _ledger_state(env) if r["command"] == "deprovision"]
    restored = json.loads(cli("restore", "acme_corp", "--from", str(backup), "--json").stdout)
    undo = cli("undo", deprovision["run_id"], "--yes")
    assert undo.exit_code == 2, undo.output
    assert f"acme_corp has been restored since (by restore run {restored['run_id']})" in undo.stderr, undo.stderr
    assert "restore acme_corp --from" not in undo.stderr  # it would only be refused: the tenant exists


def test_restoring_an_older_backup_says_a_newer_one_exists(env):
    """An operator may want a tenant's older state back: restoring its older backup works, and
    says which newer backup (and deprovision) there is, on stderr and in the JSON."""
    cli("provision", "acme_corp")
    _fill(env, "acme_corp")
    rows = _rows(env, "acme_corp")
    older, _ = _deprovision("acme_corp")
    cli("provision", "acme_corp")  # the tenant again, another one: provisioned, then deprovisioned
    newer, _ = _deprovision("acme_corp")
    deprovisions = [r["run_id"] for r in _ledger_state(env) if r["command"] == "deprovision"]  # newest first

    result = cli("restore", "acme_corp", "--from", str(older), "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["deprovisioned_by"] == deprovisions[1]
    assert done["newer_backups"] == [{"backup": str(newer), "deprovisioned_by": deprovisions[0]}]
    assert f"a newer backup of it is {newer} (deprovision run {deprovisions[0]})" in result.stderr, result.stderr
    assert _rows(env, "acme_corp") == rows  # the older state, as asked

    newest, _ = _deprovision("acme_corp")
    result = cli("restore", "acme_corp", "--from", str(newest), "--json")  # the newest: nothing to say
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["newer_backups"] == [] and "newer backup" not in result.stderr

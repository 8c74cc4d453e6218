"""The run ledger (issue 11): every changing command is recorded as it happens, read back
reconciled with the tenants, resumed and undone. Real SQLite files and a real PostgreSQL
database; real processes for signals and kill -9, on the small chain in tests/chains/steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from helpers import STEPS, cli, head, migrate_to, reported, start, tenant_engine, tenant_snapshot, version_of

from docex_migrate import api
from docex_migrate import run_record as runs_module
from docex_migrate.backends import Backend
from docex_migrate.chain import SCRIPT_LOCATION_ENV
from docex_migrate.errors import InvalidTenantError, UsageError
from docex_migrate.ledger import Ledger, meta, run_tenants, runs
from docex_migrate.selection import hash_order
from docex_migrate.tenants import schema_name, sqlite_path

TENANTS = [f"t{i:02d}" for i in range(20)]


def at(env, tenants: list[str], revision: str) -> None:
    for tenant in tenants:
        migrate_to(env, tenant, revision)


def latest_run(command: str | None = None) -> dict:
    rows = json.loads(cli("runs", "--json").stdout)
    return next(r for r in rows if command is None or r["command"] == command)


def shown(run_id: str) -> dict:
    result = cli("runs", "show", run_id, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def outcomes(run_id: str) -> dict[str, tuple[str, str | None, str | None]]:
    return {t["tenant_id"]: (t["action"], t["from_revision"], t["to_revision"]) for t in shown(run_id)["tenants"]}


def ledger(env) -> Ledger:
    backend = env.backend
    try:
        return Ledger.for_writing(backend.ledger())
    finally:
        backend.dispose()


def ledger_rows(env) -> list:
    """Everything in this fleet's part of the ledger, to prove a command wrote nothing."""
    book = ledger(env)
    try:
        with book.connection.begin():
            found = book.connection.execute(sa.select(runs).order_by(runs.c.run_id)).all()
            found += book.connection.execute(sa.select(run_tenants).order_by(run_tenants.c.run_id, run_tenants.c.tenant_id)).all()
        return found
    finally:
        book.close()


def test_two_failing_of_twenty_are_listed_resumed_and_undo_returns_exactly_the_others(steps, monkeypatch):
    env = steps
    at(env, TENANTS, "r1")
    monkeypatch.setenv("STEPS_FAIL_TENANT", "t03,t11")
    result = cli("upgrade", "--all-tenants")
    assert result.exit_code == 1, result.output
    first = latest_run()
    assert f"run {first['run_id']}" in result.stderr
    assert (first["command"], first["target"], first["state"]) == ("upgrade", "r3", "finished")
    assert first["counts"] == {"failed": 2, "upgraded": 18}
    assert first["chain_head"] == "r3" and first["pid"] > 0 and first["user"] and first["host"] and first["version"]
    detail = shown(first["run_id"])
    assert [t["tenant_id"] for t in detail["tenants"]] == TENANTS
    for t in detail["tenants"]:
        if t["tenant_id"] in ("t03", "t11"):
            assert (t["action"], t["from_revision"], t["to_revision"]) == ("failed", "r1", "r1")
            assert "fails for" in t["message"]
        else:
            assert (t["action"], t["from_revision"], t["to_revision"]) == ("upgraded", "r1", "r3")
        assert t["duration_ms"] is not None and t["finished_at"]

    monkeypatch.delenv("STEPS_FAIL_TENANT")
    result = cli("upgrade", "--resume", first["run_id"], "--json")
    assert result.exit_code == 0, result.output
    assert {r["tenant_id"]: r["action"] for r in reported(result.stdout)} == {"t03": "upgraded", "t11": "upgraded"}
    resumed = latest_run()
    assert resumed["resumes"] == first["run_id"] and resumed["counts"] == {"upgraded": 2}

    result = cli("undo", first["run_id"], "--yes", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["tenant_id"]: r for r in reported(result.stdout)}
    assert set(rows) == set(TENANTS) - {"t03", "t11"}
    assert {(r["action"], r["from_revision"], r["to_revision"]) for r in rows.values()} == {("downgraded", "r3", "r1")}
    assert latest_run()["undoes"] == first["run_id"]
    for tenant in TENANTS:
        assert version_of(env, tenant) == (("r3",) if tenant in ("t03", "t11") else ("r1",))


def test_a_run_mixing_skipped_and_migrated_tenants_records_every_tenant_and_undo_moves_them_back(steps):
    """Attack on issue 24: the rows of tenants decided before the run (skipped: already at the
    target) and those it then migrated went in one multi-row INSERT whose rows had different
    keys; it failed, the migrated tenants were never recorded, and `undo` said there was nothing
    to undo (exit 0) while they stayed migrated."""
    env = steps
    at(env, ["a", "b", "c"], "r1")
    at(env, ["a"], "r3")
    result = cli("upgrade", "--all-tenants")
    assert result.exit_code == 0, result.output
    assert "could not record" not in result.stderr, result.stderr
    run = latest_run("upgrade")
    assert run["counts"] == {"skipped": 1, "upgraded": 2}
    assert outcomes(run["run_id"]) == {"a": ("skipped", "r3", "r3"), "b": ("upgraded", "r1", "r3"), "c": ("upgraded", "r1", "r3")}
    undone = cli("undo", run["run_id"], "--yes")
    assert undone.exit_code == 0, undone.output
    assert [version_of(env, t) for t in ("a", "b", "c")] == [("r3",), ("r1",), ("r1",)]


def test_undo_leaves_a_tenant_that_moved_since_and_lists_it(steps):
    env = steps
    at(env, ["a", "b", "c"], "r1")
    assert cli("upgrade", "--all-tenants").exit_code == 0
    first = latest_run()["run_id"]
    assert cli("downgrade", "r2", "--tenant", "b", "--yes").exit_code == 0
    result = cli("undo", first, "--yes", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["tenant_id"]: r for r in reported(result.stdout)}
    assert rows["a"]["action"] == rows["c"]["action"] == "downgraded"
    assert rows["b"]["action"] == "skipped" and "moved since" in rows["b"]["message"]
    assert [version_of(env, t) for t in "abc"] == [("r1",), ("r2",), ("r1",)]


def test_undo_checks_under_the_lock_that_the_tenant_has_not_moved_since_its_plan(steps, monkeypatch):
    """Another run moves b between undo's plan and b's lock: undo must leave b where that run
    put it (listed, skipped), not take it back from there."""
    env = steps
    at(env, ["a", "b"], "r1")
    first = api.Run(env.settings, "upgrade")
    assert [r.action.value for r in api.upgrade(env.settings, None, run=first)] == ["upgraded", "upgraded"]
    planned = api.undo_plan

    def plan_then_another_run_moves_b(*args, **kwargs):
        found = planned(*args, **kwargs)
        migrate_to(env, "b", "r2", downgrade=True)
        return found

    monkeypatch.setattr(api, "undo_plan", plan_then_another_run_moves_b)
    results = {r.tenant_id: r for r in api.undo(env.settings, first.run_id)}
    assert results["a"].action.value == "downgraded" and version_of(env, "a") == ("r1",)
    assert results["b"].action.value == "skipped", results["b"]
    assert "moved since" in results["b"].message and "now at r2" in results["b"].message
    assert version_of(env, "b") == ("r2",)


def rows_of(env, tenant: str) -> list[int]:
    engine = tenant_engine(env, tenant)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT id FROM t1 ORDER BY id")).scalars())
    finally:
        engine.dispose()


def give_data(env, tenant: str) -> None:
    engine = tenant_engine(env, tenant)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t1 (id) VALUES (7)"))
    finally:
        engine.dispose()


def test_undo_of_a_provision_leaves_a_tenant_dropped_and_provisioned_again_since(steps):
    """Issue 20: undo compared revisions only: undoing the first provision of a tenant that was
    deprovisioned and provisioned again since took the new tenant (and its rows) back to base."""
    env = steps
    assert cli("provision", "acme", "globex").exit_code == 0
    first = latest_run("provision")["run_id"]
    assert cli("deprovision", "acme", "--yes", "--no-backup").exit_code == 0
    assert cli("provision", "acme").exit_code == 0
    give_data(env, "acme")
    result = cli("undo", first, "--yes", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["tenant_id"]: r for r in reported(result.stdout)}
    assert rows["acme"]["action"] == "skipped" and "created again since run" in rows["acme"]["message"], rows["acme"]
    assert version_of(env, "acme") == ("r3",) and rows_of(env, "acme") == [7]
    assert rows["globex"]["action"] == "downgraded" and version_of(env, "globex") == ()


def test_undo_of_an_upgrade_leaves_a_tenant_created_again_at_the_same_revision(steps, monkeypatch):
    """The sibling: an upgrade undone after the tenant was dropped and created again at the
    revision the upgrade left it at (found by the plan, and under the tenant's lock)."""
    env = steps
    at(env, ["a", "b", "c"], "r1")
    first = api.Run(env.settings, "upgrade")
    assert {r.action.value for r in api.upgrade(env.settings, None, run=first)} == {"upgraded"}
    assert cli("deprovision", "b", "--yes", "--no-backup").exit_code == 0
    migrate_to(env, "b", "r3")
    give_data(env, "b")
    planned = api.undo_plan

    def plan_then_c_is_created_again(*args, **kwargs):
        found = planned(*args, **kwargs)
        assert cli("deprovision", "c", "--yes", "--no-backup").exit_code == 0
        migrate_to(env, "c", "r3")
        give_data(env, "c")
        return found

    monkeypatch.setattr(api, "undo_plan", plan_then_c_is_created_again)
    results = {r.tenant_id: r for r in api.undo(env.settings, first.run_id)}
    assert results["a"].action.value == "downgraded" and version_of(env, "a") == ("r1",)
    for tenant in "bc":
        assert results[tenant].action.value == "skipped", results[tenant]
        assert "created again since" in results[tenant].message
        assert version_of(env, tenant) == ("r3",) and rows_of(env, tenant) == [7]


def test_undo_that_leaves_every_tenant_alone_does_not_say_they_are_at_the_target(sqlite_env):
    """Undo of a provision whose tenants were all deprovisioned and provisioned again since (#1's
    look-alikes) rightly leaves them alone, listed as skipped, but its last line says "nothing to
    undo: all 2 tenant(s) already at the target revision": they are at head, the undo's target
    was base. An operator reading the summary believes the undo happened. Expected: the summary
    says they were left alone (or counts them `2 skipped`), never that they are at the target."""
    env = sqlite_env
    provisioned = cli("provision", "a", "b")
    assert provisioned.exit_code == 0, provisioned.output
    run_id = provisioned.stderr.split()[1].rstrip(":")
    for tenant in ("a", "b"):
        assert cli("deprovision", tenant, "--yes", "--no-backup").exit_code == 0
        assert cli("provision", tenant).exit_code == 0
    result = cli("undo", run_id, "--yes")
    assert "left alone" in result.output
    assert [s.revision for s in api.status(env.settings, ["a", "b"])] == [head()] * 2
    assert "already at the target revision" not in result.output, result.output


def test_undo_of_a_killed_provision_leaves_a_tenant_provisioned_again_since(sqlite_env):
    """#1 records which namespace each tenant was, so that undo never drops a tenant created
    again since. But a provision's tenants are written `pending` at the plan with no identity
    (the namespace does not exist yet), and a run killed (-9, OOM, node lost) after a tenant's
    commit and before its result row keeps that row: reconciliation then counts the tenant
    `provisioned`, with no identity, and undo checks revisions alone. A tenant deprovisioned and
    provisioned again since, holding the application's new rows, is taken to base: its tables
    and rows dropped. Expected: such a tenant is left alone (skipped), its rows kept."""
    env = sqlite_env
    tenants = [f"t{i:02d}" for i in range(20)]
    ledger_file = env.workdir / "storage" / "docex_migrate_runs.db"
    assert cli("provision", "warmup").exit_code == 0  # the ledger exists, in WAL mode
    run = subprocess.Popen(
        [sys.executable, "-m", "docex_migrate", "provision", *tenants],
        cwd=env.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    blocker = sqlite3.connect(ledger_file, isolation_level=None, timeout=30)
    try:
        first = run.stderr.readline()  # "run RUN: provision started": its pending rows are written
        assert "provision started" in first, first
        run_id = first.split()[1].rstrip(":")
        blocker.execute("BEGIN IMMEDIATE")  # the ledger is busy (a `runs` reader, a backup): results wait
        for line in run.stderr:
            if f"[{len(tenants)}/{len(tenants)}]" in line:
                break  # every tenant committed
        run.kill()  # before its results reach the ledger
        run.wait(30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run.stderr.close()
        blocker.execute("ROLLBACK") if blocker.in_transaction else None
        blocker.close()
    assert [s.revision for s in api.status(env.settings, tenants)] == [head()] * len(tenants)
    assert cli("deprovision", "t00", "--yes", "--no-backup").exit_code == 0
    assert cli("provision", "t00").exit_code == 0
    with contextlib.closing(sqlite3.connect(env.namespace("t00"))) as db, db:
        db.execute("INSERT INTO docbasket VALUES ('b1', 'after', NULL, '{}', 'active', '2026-01-01', '2026-01-01')")
    result = cli("undo", run_id, "--yes")
    assert [s.revision for s in api.status(env.settings, ["t00"])] == [head()], result.output
    with contextlib.closing(sqlite3.connect(env.namespace("t00"))) as db:
        assert db.execute("SELECT id FROM docbasket").fetchall() == [("b1",)]


def test_undo_of_a_provision_and_confirmation_rules(steps):
    env = steps
    assert cli("provision", "a", "b").exit_code == 0
    run_id = latest_run("provision")["run_id"]
    result = cli("undo", run_id)  # no terminal: like downgrade, it needs --yes
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert version_of(env, "a") == ("r3",)
    assert cli("undo", run_id, "--yes").exit_code == 0
    assert version_of(env, "a") == version_of(env, "b") == ()


def test_read_only_commands_create_no_ledger_and_write_nothing(steps):
    env = steps
    at(env, ["a"], "r1")
    before = env.everything()
    for args in (["status"], ["tenants"], ["runs"], ["runs", "--json"], ["history"], ["heads"]):
        assert cli(*args).exit_code == 0, args
    assert cli("runs", "show", "nope").exit_code == 2
    assert cli("upgrade", "--tenant", "a", "--tenant", "ghost", "r1").exit_code == 1  # nothing to do: nothing recorded
    assert env.everything() == before
    assert cli("upgrade", "--all-tenants").exit_code == 0
    recorded = ledger_rows(env)
    for args in (["status"], ["tenants"], ["runs"], ["runs", "show", latest_run()["run_id"]]):
        assert cli(*args).exit_code == 0, args
    assert ledger_rows(env) == recorded


@contextlib.contextmanager
def read_only(directory: Path):
    """The directory as a read-only volume gives it (EROFS even for root): bound read-only onto itself."""
    mounted = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True, capture_output=True)
        with pytest.raises(OSError, match="Read-only file system"):
            (directory / "probe").write_text("")
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_reading_commands_work_on_read_only_storage(steps):
    """Issue 20: `runs` failed on read-only SQLite storage ('unable to open database file'): the
    WAL ledger was opened read-write, and so was a WAL tenant by status and verify."""
    env = steps
    if env.kind != "sqlite":
        pytest.skip("SQLite storage")
    at(env, ["a", "b"], "r1")
    assert cli("upgrade", "--all-tenants").exit_code == 0
    run_id = latest_run()["run_id"]
    wal = sqlite3.connect(env.namespace("b"))
    assert wal.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    wal.close()
    with read_only(env.workdir / "storage"):
        listed = cli("runs", "--json")
        assert listed.exit_code == 0, listed.output
        assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]
        assert outcomes(run_id) == {"a": ("upgraded", "r1", "r3"), "b": ("upgraded", "r1", "r3")}
        status = cli("status", "--json")
        assert status.exit_code == 0, status.output
        assert {s["tenant_id"]: s["revision"] for s in json.loads(status.stdout)} == {"a": "r3", "b": "r3"}
        verified = cli("verify", "--all-tenants")
        assert verified.exit_code == 0 and "cannot read" not in verified.output, verified.output


def test_the_ledger_is_never_a_tenant(steps, monkeypatch):
    env = steps
    with pytest.raises(InvalidTenantError, match="reserved"):
        schema_name("{tenant_id}", "docex_migrate")
    with pytest.raises(InvalidTenantError, match="ledger"):
        sqlite_path("storage/{tenant_id}.db", "docex_migrate_runs")
    with pytest.raises(InvalidTenantError, match="ledger"):
        sqlite_path("{tenant_id}.db", "docex_migrate_runs")
    config = yaml.safe_load(env.config_file.read_text())
    if env.kind == "sqlite":
        config["database"]["sqlite"]["path_template"] = "storage/{tenant_id}.db"
    else:
        config["database"]["postgres"]["schema_template"] = "{tenant_id}"
    env.config_file.write_text(yaml.safe_dump(config))
    if env.kind == "postgres":  # '{tenant_id}' discovers every schema of the shared database: look at ours only
        assert cli("provision", "zz_fleet_a").exit_code == 0
        found = json.loads(cli("tenants", "--json").stdout)
        assert "docex_migrate" not in {t["tenant_id"] for t in found}
        statuses = json.loads(cli("status", "--json").stdout)
        assert "docex_migrate" not in {s["tenant_id"] for s in statuses}
        assert cli("deprovision", "zz_fleet_a", "--yes", "--no-backup").exit_code == 0
        return
    assert cli("provision", "a", "b").exit_code == 0
    assert (env.workdir / "storage" / "docex_migrate_runs.db").is_file()
    assert [t["tenant_id"] for t in json.loads(cli("tenants", "--json").stdout)] == ["a", "b"]
    assert [s["tenant_id"] for s in json.loads(cli("status", "--json").stdout)] == ["a", "b"]
    assert cli("upgrade", "--all-tenants").exit_code == 0


def test_resume_and_undo_refuse_bad_runs_with_one_line_and_touch_nothing(steps):
    env = steps
    at(env, ["a", "b"], "r1")
    assert cli("upgrade", "--tenant", "a").exit_code == 0
    good = latest_run()["run_id"]
    assert cli("deprovision", "b", "--yes").exit_code == 0
    dropped = latest_run()["run_id"]
    before = (env.everything(), tenant_snapshot(env, "a"), ledger_rows(env))

    def refused(args: list[str], message: str) -> None:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
        assert (env.everything(), tenant_snapshot(env, "a"), ledger_rows(env)) == before

    refused(["upgrade", "--resume", "nope"], "no run 'nope'")
    refused(["undo", "nope", "--yes"], "no run 'nope'")
    refused(["undo", dropped, "--yes"], "backup")
    refused(["downgrade", "--resume", good, "--yes"], "cannot be resumed")
    refused(["upgrade", "r1", "--resume", good], "--resume takes")

    book = ledger(env)  # a run still running: this very process, alive
    try:
        with book.connection.begin():
            row = book.connection.execute(sa.select(runs).where(runs.c.run_id == good)).mappings().one()
            from docex_migrate.run_record import _process_start

            book.connection.execute(
                runs.update()
                .where(runs.c.run_id == good)
                .values(state="running", pid=os.getpid(), process_start=_process_start(os.getpid()))
            )
        before = (env.everything(), tenant_snapshot(env, "a"), ledger_rows(env))
        refused(["upgrade", "--resume", good], "still running")
        refused(["undo", good, "--yes"], "still running")
        with book.connection.begin():
            book.connection.execute(runs.update().where(runs.c.run_id == good).values(state=row["state"], target="zz9"))
        before = (env.everything(), tenant_snapshot(env, "a"), ledger_rows(env))
        refused(["upgrade", "--resume", good], "does not know")
    finally:
        book.close()

    config = yaml.safe_load(env.config_file.read_text())  # the same database, another fleet (template)
    if env.kind == "sqlite":
        config["database"]["sqlite"]["path_template"] = "storage/other_{tenant_id}/docex.db"
    else:
        config["database"]["postgres"]["schema_template"] = "other" + config["database"]["postgres"]["schema_template"]
    env.config_file.write_text(yaml.safe_dump(config))
    result = cli("upgrade", "--resume", good)
    assert result.exit_code == 2 and "another database" in result.stderr


def test_the_fleet_is_the_database_the_server_names_however_the_host_or_path_is_spelled(steps):
    """Issue 20: the ledger keyed a fleet by the host as spelled, so the same database reached as
    localhost after 127.0.0.1 (or SQLite storage through a symbolic link) 'belonged to another
    database'. A run an older docex-migrate keyed by the spelling stays readable."""
    env = steps
    at(env, ["a", "b"], "r1")
    config = yaml.safe_load(env.config_file.read_text())
    assert cli("upgrade", "--all-tenants", "r2").exit_code == 0
    older = latest_run()["run_id"]
    if env.kind == "postgres":
        pg = config["database"]["postgres"]
        spelled = f"PostgreSQL {pg['host']}:{pg['port']}/{pg['database']} {pg['schema_template']}"
        book = ledger(env)
        try:
            with book.connection.begin():
                book.connection.execute(runs.update().where(runs.c.run_id == older).values(fleet=spelled))
        finally:
            book.close()
        assert shown(older)["run_id"] == older
    assert cli("upgrade", "--all-tenants").exit_code == 0
    recorded = latest_run()["run_id"]
    if env.kind == "sqlite":
        (env.workdir / "elsewhere").symlink_to(env.workdir / "storage")
        config["database"]["sqlite"]["path_template"] = "elsewhere/tenant_{tenant_id}/docex.db"
    else:
        assert config["database"]["postgres"]["host"] == "127.0.0.1"
        config["database"]["postgres"]["host"] = "localhost"
    env.config_file.write_text(yaml.safe_dump(config))
    assert shown(recorded)["tenants"][0]["action"] == "upgraded"
    result = cli("undo", recorded, "--yes")
    assert result.exit_code == 0, result.output
    assert version_of(env, "a") == version_of(env, "b") == ("r2",)


@pytest.mark.postgres
def test_a_least_privileged_role_reads_the_runs_of_its_fleet(pg_env, reader_role, monkeypatch):
    """The fleet's key is what any role can read: a role that may only connect and read sees
    the runs the migrating role recorded (pg_control_system() may be revoked from it)."""
    env = pg_env
    monkeypatch.setenv(SCRIPT_LOCATION_ENV, str(STEPS))
    at(env, ["a"], "r1")
    assert cli("upgrade", "--all-tenants").exit_code == 0
    run_id = latest_run()["run_id"]
    with env.engine().begin() as conn:
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA docex_migrate TO {reader_role}")
        conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA docex_migrate TO {reader_role}")
        conn.exec_driver_sql("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    try:
        config = yaml.safe_load(env.config_file.read_text())
        config["database"]["postgres"]["user"] = reader_role
        env.config_file.write_text(yaml.safe_dump(config))
        assert [r["run_id"] for r in json.loads(cli("runs", "--json").stdout)] == [run_id]
        assert outcomes(run_id) == {"a": ("upgraded", "r1", "r3")}
    finally:
        with env.engine().begin() as conn:
            conn.exec_driver_sql("GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC")


def test_a_ledger_without_the_identity_column_is_read_as_it_is_and_gets_it_when_written(steps):
    """A ledger an older docex-migrate wrote (schema 1, no run_tenants.identity): reading it
    neither fails nor changes it; its runs are undone on revisions; the next run adds the column."""
    env = steps
    at(env, ["a"], "r1")
    assert cli("upgrade", "--all-tenants", "r2").exit_code == 0
    run_id = latest_run()["run_id"]
    book = ledger(env)
    table = "docex_migrate.run_tenants" if env.kind == "postgres" else "run_tenants"

    def columns() -> set[str]:
        with book.connection.begin():
            return {c["name"] for c in sa.inspect(book.connection).get_columns("run_tenants", schema=book.place.schema)}

    try:
        with book.connection.begin():
            book.connection.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN identity")
        assert outcomes(run_id) == {"a": ("upgraded", "r1", "r2")}
        assert "identity" not in columns()
        assert cli("undo", run_id, "--yes").exit_code == 0
        assert version_of(env, "a") == ("r1",)
        assert "identity" in columns()
    finally:
        if "identity" not in columns():  # the PostgreSQL ledger is shared by the whole test run
            with book.connection.begin():
                book.connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN identity TEXT")
        book.close()


def test_a_ledger_from_a_newer_docex_migrate_is_refused_never_overwritten(steps):
    env = steps
    at(env, ["a"], "r1")
    assert cli("upgrade", "--tenant", "a", "r2").exit_code == 0
    book = ledger(env)

    def schema_version(value: str) -> None:
        with book.connection.begin():
            book.connection.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))

    schema_version("99")
    try:
        for args in (["upgrade", "--all-tenants"], ["runs"]):
            result = cli(*args)
            assert result.exit_code == 2, result.output
            assert "newer docex-migrate" in result.stderr and "pip install -U" in result.stderr
        assert version_of(env, "a") == ("r2",)
        with book.connection.begin():
            assert book.connection.execute(sa.select(meta.c.value)).scalars().all() == ["99"]  # never overwritten
    finally:
        schema_version("1")  # the PostgreSQL ledger is shared by the whole test run
        book.close()


@pytest.mark.ledger_may_fail
def test_a_locked_ledger_is_waited_for_a_bounded_time_and_the_lock_is_named(steps, monkeypatch, caplog):
    """Issue 20: the PostgreSQL ledger's connection had no lock timeout: a ledger table locked by
    another session hung `runs` and every run forever. Now reading fails, saying which lock and
    who holds it, and a run goes on unrecorded, saying the same."""
    env = steps
    at(env, ["a"], "r1")
    assert cli("upgrade", "--all-tenants", "r2").exit_code == 0
    monkeypatch.setattr(Backend, "ledger_lock_wait", 1.0, raising=False)
    if env.kind == "sqlite":  # WAL: readers are never blocked; a writer holding the file blocks writes
        holder = sqlite3.connect(str(env.workdir / "storage" / "docex_migrate_runs.db"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:  # before the fix this waited until the server ended the idle holder (15 s), then succeeded
        holder = env.engine().connect()
        holder.exec_driver_sql("SET idle_in_transaction_session_timeout = '15s'")
        holder.exec_driver_sql("LOCK TABLE docex_migrate.runs IN ACCESS EXCLUSIVE MODE")
        holder_pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    try:
        started = time.monotonic()
        if env.kind == "postgres":
            result = cli("runs")
            assert result.exit_code == 2, result.output
            (line,) = result.stderr.strip().splitlines()
            assert "waited more than 1s" in line and "docex_migrate.runs" in line and "AccessExclusiveLock" in line
            assert f"pid {holder_pid}" in line, line
        result = cli("upgrade", "--all-tenants")
        assert result.exit_code == 0, result.output
        assert "could not record run" in caplog.text or "this run is not recorded" in caplog.text, caplog.text
        assert ("pid" if env.kind == "postgres" else "docex_migrate_runs.db stayed locked") in caplog.text, caplog.text
        assert version_of(env, "a") == ("r3",)
        assert time.monotonic() - started < 10
    finally:
        holder.close()


def test_a_tenant_committed_before_its_row_is_reconciled_from_the_tenant(steps):
    """kill -9 can fall between a tenant's commit and its ledger row: the row stays pending,
    the run 'running'. Reading shows the run interrupted and the tenant as it really is."""
    env = steps
    at(env, ["a", "b", "c"], "r1")
    assert cli("upgrade", "--all-tenants").exit_code == 0
    run_id = latest_run()["run_id"]
    migrate_to(env, "c", "r1", downgrade=True)  # c "never got there"
    book = ledger(env)
    try:
        with book.connection.begin():
            book.connection.execute(runs.update().where(runs.c.run_id == run_id).values(state="running", pid=2**22 + 7))
            book.connection.execute(
                run_tenants.update()
                .where(run_tenants.c.run_id == run_id, run_tenants.c.tenant_id.in_(["b", "c"]))
                .values(action="pending", to_revision=None)
            )
    finally:
        book.close()
    assert latest_run()["state"] == "interrupted"
    found = outcomes(run_id)
    assert found == {"a": ("upgraded", "r1", "r3"), "b": ("upgraded", "r1", "r3"), "c": ("not-run", "r1", "r1")}
    result = cli("upgrade", "--resume", run_id, "--json")
    assert result.exit_code == 0, result.output
    assert [(r["tenant_id"], r["action"]) for r in reported(result.stdout)] == [("c", "upgraded")]


def test_python_api_runs_resume_and_undo(steps, monkeypatch):
    env = steps
    at(env, ["a", "b"], "r1")
    monkeypatch.setenv("STEPS_FAIL_TENANT", "b")
    run = api.Run(env.settings, "upgrade")
    results = api.upgrade(env.settings, None, run=run)
    assert [r.action.value for r in results] == ["upgraded", "failed"]
    assert run.recorded and api.runs(env.settings)[0].run_id == run.run_id
    monkeypatch.delenv("STEPS_FAIL_TENANT")
    assert [(r.tenant_id, r.action.value) for r in api.upgrade(env.settings, resume=run.run_id)] == [("b", "upgraded")]
    assert [(r.tenant_id, r.action.value) for r in api.undo(env.settings, run.run_id)] == [("a", "downgraded")]
    assert api.show_run(env.settings, run.run_id).run.counts == {"failed": 1, "upgraded": 1}
    with pytest.raises(UsageError):
        api.undo(env.settings, "nope")


def test_version_names_the_chain_head(steps):
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("docex-migrate ") and "chain head r3" in result.stdout


# Real processes: signals and kill -9


def wait_for_marker(run: subprocess.Popen, marker: Path, tenant: str) -> None:
    deadline = time.monotonic() + 90
    while not (marker.exists() and marker.read_text() == tenant):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, f"{tenant} never reached step 2"
        time.sleep(0.05)


def whole(env, tenant: str) -> str:
    (revision,) = version_of(env, tenant)
    assert revision in ("r1", "r3"), (tenant, revision)
    return revision


def test_results_reach_the_ledger_while_the_run_goes_on(steps, tmp_path):
    """Not at the end: while k2 is inside its migration, the ledger itself (read directly,
    nothing reconciled) already holds k0 and k1 as upgraded and k2 onwards as pending."""
    env = steps
    tenants = [f"k{i}" for i in range(4)]
    at(env, tenants, "r1")
    marker = tmp_path / "inside-step-2"
    run = start(env, "upgrade", "--all-tenants", STEPS_SLEEP="60", STEPS_SLEEP_TENANT="k2", STEPS_MARKER=str(marker))
    try:
        wait_for_marker(run, marker, "k2")
        (run_id,) = [row.run_id for row in ledger_rows(env) if getattr(row, "pid", None) == run.pid]
        deadline, found = time.monotonic() + 10, {}
        while time.monotonic() < deadline and found.get("k1") != "upgraded":
            time.sleep(0.05)
            found = {
                row.tenant_id: row.action for row in ledger_rows(env) if getattr(row, "tenant_id", None) and row.run_id == run_id
            }
        assert found == {"k0": "upgraded", "k1": "upgraded", "k2": "pending", "k3": "pending"}
    finally:
        run.kill()
        run.communicate()


def test_runs_show_of_a_live_run_shows_where_its_pending_tenants_go(steps, tmp_path):
    """Issue 20: a live run's pending tenants were shown going to 'base' (their to_revision is
    not known yet); they go to the run's target."""
    env = steps
    at(env, ["k0", "k1", "k2"], "r1")
    marker = tmp_path / "inside-step-2"
    run = start(env, "upgrade", "--all-tenants", STEPS_SLEEP="60", STEPS_SLEEP_TENANT="k1", STEPS_MARKER=str(marker))
    try:
        wait_for_marker(run, marker, "k1")
        (run_id,) = [row.run_id for row in ledger_rows(env) if getattr(row, "pid", None) == run.pid]
        deadline, rows = time.monotonic() + 10, {}
        while time.monotonic() < deadline and rows.get("k0", [""])[0] != "upgraded":  # k0's result is on its way
            time.sleep(0.05)
            result = cli("runs", "show", run_id)
            assert result.exit_code == 0, result.output
            rows = {line.split()[0]: line.split()[1:4] for line in result.stdout.splitlines() if line.startswith("k")}
        assert rows["k0"] == ["upgraded", "r1", "r3"]
        assert rows["k1"] == rows["k2"] == ["pending", "r1", "pending"]
        assert all("pending -> r3" in line for line in result.stdout.splitlines() if line.startswith(("k1", "k2")))
        assert "base" not in result.stdout
    finally:
        run.kill()
        run.communicate()


def test_a_long_run_beats_its_heartbeat(steps, monkeypatch):
    """The heartbeat tells a live run on another host from a dead one: it must advance while a
    tenant takes long (it is written on the ledger's own schema on PostgreSQL too)."""
    env = steps
    at(env, ["slow"], "r1")
    monkeypatch.setattr(runs_module, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setenv("STEPS_SLEEP", "1.5")
    run = api.Run(env.settings, "upgrade")
    assert [r.action.value for r in api.upgrade(env.settings, None, run=run)] == ["upgraded"]
    (row,) = [r for r in ledger_rows(env) if getattr(r, "run_id", None) == run.run_id and hasattr(r, "heartbeat_at")]
    assert row.heartbeat_at > row.started_at
    assert row.heartbeat_at < row.finished_at


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_stopped_run_is_marked_interrupted_and_resume_finishes_it(steps, tmp_path, how):
    env = steps
    tenants = [f"k{i}" for i in range(5)]
    at(env, tenants, "r1")
    marker = tmp_path / "inside-step-2"
    run = start(env, "upgrade", "--all-tenants", STEPS_SLEEP="60", STEPS_SLEEP_TENANT="k2", STEPS_MARKER=str(marker))
    wait_for_marker(run, marker, "k2")  # k0 and k1 are done, k2 is inside step 2, k3 and k4 wait
    os.kill(run.pid, getattr(signal, how))
    _, err = run.communicate(timeout=60)
    assert run.returncode == {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -9}[how], err
    assert {t: whole(env, t) for t in tenants} == {"k0": "r3", "k1": "r3", "k2": "r1", "k3": "r1", "k4": "r1"}

    stopped = latest_run()
    assert stopped["state"] == "interrupted"
    if how != "SIGKILL":
        assert "marked interrupted" in err and f"--resume {stopped['run_id']}" in err
    found = outcomes(stopped["run_id"])
    assert found["k0"] == found["k1"] == ("upgraded", "r1", "r3")
    assert found["k2"] == found["k3"] == found["k4"] == ("not-run", "r1", "r1")

    result = cli("upgrade", "--resume", stopped["run_id"], "--json")
    assert result.exit_code == 0, result.output
    assert {r["tenant_id"]: r["action"] for r in reported(result.stdout)} == dict.fromkeys(["k2", "k3", "k4"], "upgraded")
    assert {whole(env, t) for t in tenants} == {"r3"}


def test_progress_is_one_line_per_tenant_off_a_terminal_and_json_stays_on_stdout(steps, monkeypatch):
    env = steps
    at(env, ["a", "b", "c"], "r1")
    monkeypatch.setenv("STEPS_FAIL_TENANT", "b")
    result = cli("upgrade", "--all-tenants", "--json")
    assert result.exit_code == 1
    assert [r["tenant_id"] for r in reported(result.stdout)] == ["a", "b", "c"]
    lines = result.stderr.splitlines()
    run_id = latest_run()["run_id"]
    assert lines[0] == f"run {run_id}: upgrade started"  # first, so an operator can follow it
    progress = [line for line in lines if line.startswith("[")]
    assert [line.split(" ")[:3] for line in progress] == [
        ["[1/3]", "a", "upgraded"],
        ["[2/3]", "b", "FAILED"],
        ["[3/3]", "c", "upgraded"],
    ]
    assert "step 2 fails for b" in progress[1]


def test_the_live_display_shows_the_tenants_in_flight_and_counts_failures_on_a_terminal():
    import io

    from rich.console import Console

    from docex_migrate.progress import Live
    from docex_migrate.results import Action, TenantResult

    screen = io.StringIO()
    live = Live(Console(file=screen, force_terminal=True, width=120))
    live.add(2)
    live.started("alpha")
    live.started("bravo")
    live.display.refresh()
    assert "in flight: alpha, bravo" in screen.getvalue()
    live.result(TenantResult("alpha", "ns_a", Action.UPGRADED, "r1", "r3"))
    live.display.refresh()
    assert "in flight: bravo" in screen.getvalue().rsplit("\r", 1)[-1]
    live.result(TenantResult("bravo", "ns_b", Action.FAILED, "r1", "r1", "boom"))
    assert live.display.tasks[0].completed == 2 and live.failures == 1
    live.display.refresh()
    assert "2/2" in screen.getvalue() and "1 failed" in screen.getvalue()
    live.close()


def test_a_ledger_without_the_staging_columns_is_read_as_it_is_and_gets_them_when_written(steps, monkeypatch):
    """runs.staging and run_tenants.wave (what --resume keeps of a rollout) came after schema 1:
    a ledger without them is listed and resumed (in one group: its waves are not known), and
    the next run adds them."""
    env = steps
    at(env, ["a", "b", "c"], "r1")
    monkeypatch.setenv("STEPS_FAIL_TENANT", hash_order(["a", "b", "c"])[0])
    assert cli("upgrade", "--all-tenants", "--waves", "1,2,100%").exit_code == 1
    monkeypatch.delenv("STEPS_FAIL_TENANT")
    run_id = latest_run()["run_id"]
    book = ledger(env)
    schema = "docex_migrate." if env.kind == "postgres" else ""

    def columns(table: str) -> set[str]:
        with book.connection.begin():
            return {c["name"] for c in sa.inspect(book.connection).get_columns(table, schema=book.place.schema)}

    try:
        with book.connection.begin():
            book.connection.exec_driver_sql(f"ALTER TABLE {schema}runs DROP COLUMN staging")
            book.connection.exec_driver_sql(f"ALTER TABLE {schema}run_tenants DROP COLUMN wave")
        assert latest_run()["run_id"] == run_id and set(outcomes(run_id)) == {"a", "b", "c"}
        plan = cli("upgrade", "--resume", run_id, "--plan", "--json")
        assert plan.exit_code == 0, plan.output
        assert {t["wave"] for t in json.loads(plan.stdout)["tenants"]} == {None}  # one group, unstaged
        assert "staging" not in columns("runs") and "wave" not in columns("run_tenants")
        assert cli("upgrade", "--resume", run_id).exit_code == 0
        assert {version_of(env, t) for t in ["a", "b", "c"]} == {("r3",)}
        assert "staging" in columns("runs") and "wave" in columns("run_tenants")
    finally:  # the PostgreSQL ledger is shared by the whole test run
        missing = "staging" not in columns("runs"), "wave" not in columns("run_tenants")
        with book.connection.begin():
            if missing[0]:
                book.connection.exec_driver_sql(f"ALTER TABLE {schema}runs ADD COLUMN staging TEXT")
            if missing[1]:
                book.connection.exec_driver_sql(f"ALTER TABLE {schema}run_tenants ADD COLUMN wave INTEGER")
        book.close()


def test_a_run_a_live_undo_is_undoing_is_neither_resumed_nor_undone_again_and_a_plan_only_warns(steps, monkeypatch, caplog):
    """The undo side of D2 (the resume side runs real processes in test_interrupts.py): a live
    undo of R (this very process, recorded running) blocks `--resume R` and `undo R`, exit 2 in one
    line, nothing written; `undo R --plan` warns and plans; once its process is gone it blocks nothing."""
    env = steps
    at(env, ["a", "b"], "r1")
    monkeypatch.setenv("STEPS_FAIL_TENANT", "b")
    assert cli("upgrade", "--all-tenants").exit_code == 1
    monkeypatch.delenv("STEPS_FAIL_TENANT")
    failed = latest_run("upgrade")["run_id"]
    book = ledger(env)
    try:
        with book.connection.begin():
            row = dict(book.connection.execute(sa.select(runs).where(runs.c.run_id == failed)).mappings().one())
            undoing = {
                **row,
                "run_id": "20990101T000000-undo01",
                "command": "undo",
                "undoes": failed,
                "resumes": None,
                "state": "running",
                "pid": os.getpid(),
                "process_start": runs_module._process_start(os.getpid()),
                "host": socket.gethostname(),
            }
            book.connection.execute(runs.insert().values(**undoing))
        before = (env.everything(), ledger_rows(env))
        for args in (["upgrade", "--resume", failed], ["undo", failed, "--yes"]):
            result = cli(*args)
            assert result.exit_code == 2, (args, result.output)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, (args, result.stderr)
            assert lines[0].startswith(
                f"error: run {failed} is being undone by run 20990101T000000-undo01 (pid {os.getpid()} "
            ), lines
            assert lines[0].endswith("runs show 20990101T000000-undo01`"), lines
        plan = cli("undo", failed, "--plan")
        assert plan.exit_code == 0, plan.output
        assert f"run {failed} is being undone by run 20990101T000000-undo01" in caplog.text
        assert (env.everything(), ledger_rows(env)) == before
        with book.connection.begin():  # its process gone: a pid that is not this one's start time
            book.connection.execute(runs.update().where(runs.c.run_id == "20990101T000000-undo01").values(process_start="0"))
    finally:
        book.close()
    resumed = cli("upgrade", "--resume", failed)
    assert resumed.exit_code == 0, resumed.output
    assert version_of(env, "b") == (head(),)

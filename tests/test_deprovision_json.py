"""deprovision --json on the paths that do not drop: a failure (exit 1: no such tenant, a backup
that cannot be written, the tenant in use) prints the one report (ok false, the tenant failed
with the message), a signal during the backup prints it with ``interrupted`` set (the tenant
as it was, not-run), and a refusal (exit 2) prints no JSON at all, as for every command. Each
report is checked against docs/schemas/command-report.schema.json (report_of)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from helpers import cli, head, report_of
from test_deprovision import _backup_rows_of_tenant, add_basket
from test_restore import Running, ledger_locked, waits_for_the_ledger

from docex_migrate.errors import EXIT_FAILED


def _failed(result, tenant: str) -> dict:
    """The one report of a failed deprovision, and its tenant's entry."""
    assert result.exit_code == EXIT_FAILED, result.output
    report = report_of(result.stdout)
    assert (report["command"], report["ok"], report["interrupted"], report["run_id"]) == ("deprovision", False, None, None)
    assert report["counts"] == {"failed": 1} and report["restore"] is None
    (entry,) = report["tenants"]
    assert (entry["tenant_id"], entry["action"]) == (tenant, "failed")
    assert f"error: {entry['message']}" == result.stderr.strip()  # the same words as the line on stderr
    return entry


def test_a_tenant_that_does_not_exist_is_reported_failed(env):
    entry = _failed(cli("deprovision", "ghost", "--yes", "--json"), "ghost")
    assert "does not exist" in entry["message"]
    assert entry["namespace"] == env.namespace("ghost")
    assert (entry["from_revision"], entry["to_revision"]) == (None, None)


def test_a_backup_that_cannot_be_written_is_reported_failed_and_the_tenant_stays(env):
    cli("provision", "acme_corp")
    add_basket(env, "acme_corp")
    (env.workdir / "not-a-dir").write_text("")
    before = env.everything()
    entry = _failed(cli("deprovision", "acme_corp", "--yes", "--json", "--backup-dir", "not-a-dir/backups"), "acme_corp")
    assert "not-a-dir" in entry["message"] and "nothing dropped" in entry["message"]
    assert (entry["from_revision"], entry["to_revision"]) == (head(), head())  # where it stays
    assert env.everything() == before and env.exists("acme_corp")


def test_a_tenant_in_use_is_reported_failed(sqlite_env):
    env = sqlite_env
    assert cli("provision", "acme_corp").exit_code == 0
    app = sqlite3.connect(Path(env.namespace("acme_corp")).resolve(), isolation_level=None)
    try:
        app.execute("SELECT count(*) FROM docbasket").fetchall()  # idle, but open
        entry = _failed(cli("deprovision", "acme_corp", "--yes", "--json", "--lock-timeout", "0.3"), "acme_corp")
    finally:
        app.close()
    assert "is in use" in entry["message"] and "nothing dropped" in entry["message"]
    assert env.exists("acme_corp")


@pytest.mark.parametrize(
    "args",
    [
        ["acme_corp", "--json"],
        ["Bad;Id", "--yes", "--json"],
        ["acme_corp", "--yes", "--json", "--no-backup", "--backup-dir", "x"],
    ],
    ids=["without-yes", "invalid-id", "conflicting-options"],
)
def test_a_refusal_exit_2_prints_no_json(env, args):
    """Refused before anything was touched (exit 2): one line on stderr, nothing on stdout."""
    cli("provision", "acme_corp")
    result = cli("deprovision", *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1


# A signal while deprovision backs the tenant up


def _slow_pg_dump(directory: Path, marker: Path) -> None:
    """A stand-in pg_dump first on PATH: deprovision's backup (the one given --snapshot) says it
    started and never ends; any other call runs the real one."""
    real = shutil.which("pg_dump")
    directory.mkdir()
    stand_in = directory / "pg_dump"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, time\n"
        "if '--snapshot' in sys.argv:\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    time.sleep(120)\n"
        "    sys.exit(1)\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    )
    stand_in.chmod(0o755)


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open now (its /proc fd links)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    except OSError:
        return False


def _stopped(deprovision: Running, env, signum: int) -> None:
    assert deprovision.finish() == 128 + signum, deprovision.stderr
    name = signal.Signals(signum).name
    report = report_of(deprovision.stdout)
    assert (report["command"], report["ok"], report["interrupted"], report["run_id"]) == ("deprovision", False, name, None)
    (entry,) = report["tenants"]
    assert (entry["tenant_id"], entry["action"], entry["from_revision"]) == ("acme_corp", "not-run", head())
    assert entry["message"] == (f"interrupted by {name} before anything was dropped: the tenant is as it was, no backup kept")
    assert f"interrupted by {name}: nothing was dropped and no backup kept" in deprovision.stderr
    assert env.exists("acme_corp") and "bas_keep" in _backup_rows_of_tenant(env, "acme_corp")
    backups = env.workdir / "backups"
    assert not backups.exists() or not list(backups.iterdir())  # the backup begun is not left to mislead
    assert cli("runs", "--json").stdout.count('"deprovision"') == 0  # nothing recorded


@pytest.mark.postgres
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_pg_dump_reports_the_tenant_as_it_was(pg_env, monkeypatch, signum):
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    cli("provision", "acme_corp")
    add_basket(pg_env, "acme_corp")
    marker = pg_env.workdir / "pg_dump-started"
    _slow_pg_dump(pg_env.workdir / "bin", marker)
    monkeypatch.setenv("PATH", f"{pg_env.workdir / 'bin'}{os.pathsep}{os.environ['PATH']}")
    deprovision = Running(pg_env, "deprovision", "acme_corp", "--yes", "--json")
    deprovision.signal_when(marker.exists, "started pg_dump", signum)
    _stopped(deprovision, pg_env, signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_deprovision_waits_for_the_tenant_reports_it_as_it_was(sqlite_env, signum):
    """SQLite: stopped while it waits for an application's connection to the file to close."""
    env = sqlite_env
    assert cli("provision", "acme_corp").exit_code == 0
    add_basket(env, "acme_corp")
    path = Path(env.namespace("acme_corp")).resolve()
    app = sqlite3.connect(path, isolation_level=None)
    try:
        app.execute("SELECT count(*) FROM docbasket").fetchall()  # idle, but open: deprovision waits
        deprovision = Running(env, "deprovision", "acme_corp", "--yes", "--json", "--lock-timeout", "120")
        deprovision.signal_when(lambda: _has_open(deprovision.proc.pid, path), "opened the tenant", signum)
    finally:
        app.close()
    _stopped(deprovision, env, signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_the_drop_committed_stops_nothing_and_the_backup_is_recorded(env, signum):
    """The signal lands once the drop has committed, while the run is being recorded (the test
    holds the ledger's lock): it raised there, so the tenant was gone, its run never recorded
    and its backup never named (restore refuses a backup the ledger does not know). Now it is
    held: the deprovision is recorded and printed, exit 0, stderr says the signal came late,
    and the restore it names brings the tenant back."""
    cli("provision", "acme_corp")
    add_basket(env, "acme_corp")
    with ledger_locked(env):
        deprovision = Running(env, "deprovision", "acme_corp", "--yes", "--json")
        deprovision.signal_when(lambda: waits_for_the_ledger(env, deprovision), "dropped acme_corp", signum)
    assert deprovision.finish() == 0, deprovision.stderr
    report = report_of(deprovision.stdout)
    assert (report["ok"], report["interrupted"], report["counts"]) == (True, None, {"deprovisioned": 1})
    name = signal.Signals(signum).name
    assert f"{name} arrived after acme_corp was dropped: it stopped nothing" in deprovision.stderr
    (run,) = [r for r in json.loads(cli("runs", "--json").stdout) if r["command"] == "deprovision"]
    assert (run["run_id"], run["state"]) == (report["run_id"], "finished")
    assert not env.exists("acme_corp")
    restore = cli(*shlex.split(report["restore"])[1:])
    assert restore.exit_code == 0, restore.output
    assert "bas_keep" in _backup_rows_of_tenant(env, "acme_corp")


@pytest.mark.parametrize(
    "args",
    [
        ["provision", "Bad;Id"],
        ["upgrade"],
        ["downgrade", "--all-tenants", "--yes"],
        ["undo", "no-such-run", "--yes"],
        ["adopt"],
        ["restore", "acme_corp", "--from", "no-such-backup.sql"],
        ["verify", "--all-tenants", "--repair"],
    ],
    ids=lambda args: args[0] if args[0] != "verify" else "verify-repair",
)
def test_every_changing_commands_refusal_prints_no_json(env, args):
    """The contract docs/reference.md states: exit 2 (refused before anything was touched) is
    one line on stderr and nothing on stdout, --json or not; only a command that ran reports."""
    result = cli(*args, "--json")
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.output

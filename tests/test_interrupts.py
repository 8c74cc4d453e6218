"""Interruptions (issue 20): a run stopped by a signal is in the ledger with every tenant it
was to reach, and the command it advises exists and finishes the job; a signal stops a run
that waits on a tenant's lock at once; a closed output pipe never stops or falsifies a run.
Real subprocesses of `python -m docex_migrate`, real signals and pipes, both backends, on the
small chain in tests/chains/steps (its step 2 can sleep and name the tenant inside it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import STEPS, cli, report_of, start
from test_drift import by_hand
from test_processes import wait_for
from test_restore import Running, ledger_locked, waits_for_the_ledger
from test_runs import at, latest_run, outcomes, wait_for_marker, whole

from docex_migrate.chain import SCRIPT_LOCATION_ENV
from docex_migrate.selection import hash_order

TENANTS = ["k0", "k1", "k2", "k3"]


def interrupted(env, tmp_path: Path, tenant: str, *args: str) -> str:
    """Run the command until ``tenant`` is inside step 2, SIGINT it; its stderr."""
    marker = tmp_path / "inside-step-2"
    marker.unlink(missing_ok=True)
    run = start(env, *args, STEPS_SLEEP="60", STEPS_SLEEP_TENANT=tenant, STEPS_MARKER=str(marker))
    try:
        wait_for_marker(run, marker, tenant)
        os.kill(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130, err
    return err


def advice(err: str) -> list[str]:
    """The command the interrupted run tells the operator to run."""
    found = re.findall(r"`docex-migrate ([^`]+)`", err)
    assert found, err
    advised = shlex.split(found[-1])
    return advised[2:] if advised[:1] == ["--config"] else advised  # the configuration file, as every advice names it


def follow(advised: list[str]) -> None:
    """Run the advised command (with --yes where it asks first) and check it succeeded."""
    confirm = ["--yes"] if advised[0] in ("downgrade", "undo") else []
    result = cli(*advised, *confirm)
    assert result.exit_code == 0, result.output


def test_interrupted_upgrade_advice_finishes_it(steps, tmp_path):
    at(steps, TENANTS, "r1")
    advised = advice(interrupted(steps, tmp_path, "k1", "upgrade", "--all-tenants"))
    assert advised[:2] == ["upgrade", "--resume"]
    follow(advised)
    assert {t: whole(steps, t) for t in TENANTS} == dict.fromkeys(TENANTS, "r3")


def test_interrupted_downgrade_advice_finishes_it(steps, tmp_path):
    at(steps, TENANTS, "r3")
    advised = advice(interrupted(steps, tmp_path, "k1", "downgrade", "r1", "--all-tenants", "--yes"))
    assert advised[:2] == ["downgrade", "--resume"]
    follow(advised)
    assert {t: whole(steps, t) for t in TENANTS} == dict.fromkeys(TENANTS, "r1")


def test_interrupted_provision_advice_creates_the_tenants_never_created(steps, tmp_path):
    at(steps, ["k1"], "r1")  # an existing tenant goes through the chain (and sleeps); the others are new
    err = interrupted(steps, tmp_path, "k1", "provision", "--exist-ok", *TENANTS)
    assert not steps.exists("k2") and not steps.exists("k3")
    advised = advice(err)
    follow(advised)
    assert {t: whole(steps, t) for t in TENANTS} == dict.fromkeys(TENANTS, "r3")
    again = latest_run()  # and an interrupted resume of it is resumed the same way
    assert again["command"] == "provision" and again["resumes"] == advised[-1]


def test_interrupted_undo_advice_finishes_the_undo_and_never_redoes(steps, tmp_path):
    at(steps, TENANTS, "r1")
    assert cli("upgrade", "--all-tenants").exit_code == 0
    upgraded = latest_run()["run_id"]
    advised = advice(interrupted(steps, tmp_path, "k1", "undo", upgraded, "--yes"))
    assert advised == ["undo", upgraded]  # the run being undone, not the undo itself
    follow(advised)
    assert {t: whole(steps, t) for t in TENANTS} == dict.fromkeys(TENANTS, "r1")


def test_interrupted_resume_advice_finishes_it(steps, tmp_path, monkeypatch):
    at(steps, TENANTS, "r1")
    monkeypatch.setenv("STEPS_FAIL_TENANT", "k1,k2")
    assert cli("upgrade", "--all-tenants").exit_code == 1
    monkeypatch.delenv("STEPS_FAIL_TENANT")
    failed = latest_run()["run_id"]
    advised = advice(interrupted(steps, tmp_path, "k1", "upgrade", "--resume", failed))
    assert advised[:2] == ["upgrade", "--resume"] and advised[2] != failed
    follow(advised)
    assert {t: whole(steps, t) for t in TENANTS} == dict.fromkeys(TENANTS, "r3")


WAVE_TENANTS = [f"w{i}" for i in range(8)]


def test_interrupted_waves_leave_every_tenant_pending_and_resume_finishes(steps, tmp_path):
    at(steps, WAVE_TENANTS, "r1")
    first = hash_order(WAVE_TENANTS)[0]
    err = interrupted(steps, tmp_path, first, "upgrade", "--all-tenants", "--waves", "2,100%")
    run_id = latest_run()["run_id"]
    found = outcomes(run_id)
    assert set(found) == set(WAVE_TENANTS), found  # the later wave too, though it never started
    assert {action for action, _, _ in found.values()} == {"not-run"}
    advised = advice(err)
    assert advised == ["upgrade", "--resume", run_id]
    follow(advised)
    assert {t: whole(steps, t) for t in WAVE_TENANTS} == dict.fromkeys(WAVE_TENANTS, "r3")


def test_sigint_between_waves_leaves_the_later_waves_pending_and_resume_finishes(steps):
    at(steps, WAVE_TENANTS, "r1")
    run = start(steps, "upgrade", "--all-tenants", "--waves", "1,100%", "--pause-between-waves", "60")
    try:
        deadline = time.monotonic() + 60
        while "[1/" not in (line := run.stderr.readline()):  # the first wave's one tenant is done
            assert line and time.monotonic() < deadline, run.communicate()
        os.kill(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == 130, err
    stopped = latest_run()
    assert stopped["state"] == "interrupted"
    found = outcomes(stopped["run_id"])
    assert set(found) == set(WAVE_TENANTS)
    assert sorted(action for action, _, _ in found.values()) == ["not-run"] * 7 + ["upgraded"], (found, err)
    follow(advice(err))
    assert {t: whole(steps, t) for t in WAVE_TENANTS} == dict.fromkeys(WAVE_TENANTS, "r3")


def test_the_advice_after_sigterm_in_a_pause_resumes_the_rollout_in_its_waves(steps):
    """A hostile review: SIGTERM during the pause of `--waves 1,50%,100% --pause-between-waves`;
    the advised `upgrade --resume RUN` (and its --plan) migrated every tenant left in one group,
    with no pause. It keeps the run's waves: wave 1 is done, waves 2 and 3 remain, paused between."""
    at(steps, WAVE_TENANTS, "r1")
    order = hash_order(WAVE_TENANTS)  # 1, then 50% of 8 (4), then 8: waves of 1, 3 and 4 tenants
    err = _signalled_in_a_pause(steps, signal.SIGTERM, "--waves", "1,50%,100%", "--pause-between-waves", "1.5")
    advised = advice(err)
    assert advised[:2] == ["upgrade", "--resume"]

    plan = cli(*advised, "--plan", "--json")
    assert plan.exit_code == 0, plan.output
    waves = {t["tenant_id"]: t["wave"] for t in json.loads(plan.stdout)["tenants"]}
    assert waves == {**dict.fromkeys(order[1:4], 1), **dict.fromkeys(order[4:], 2)}

    resumed = cli(*advised)
    assert resumed.exit_code == 0, resumed.output
    assert [line for line in resumed.stderr.splitlines() if line.startswith(("wave", "pausing"))] == [
        "wave 1 of 2: 3 tenants",
        "pausing 1.5 s before wave 2 of 2",
        "wave 2 of 2: 4 tenants",
    ]
    assert {t: whole(steps, t) for t in WAVE_TENANTS} == dict.fromkeys(WAVE_TENANTS, "r3")


def _signalled_in_a_pause(env, signum: int, *staging: str) -> str:
    """`upgrade --all-tenants STAGING...` sent ``signum`` in its first pause: its stderr."""
    run = start(env, "upgrade", "--all-tenants", *staging)
    try:
        deadline = time.monotonic() + 60
        while not (line := run.stderr.readline()).startswith("pausing"):
            assert line and time.monotonic() < deadline, run.communicate()
        os.kill(run.pid, signum)
        _, err = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == 128 + signum, err
    return err


def _stopped_in_a_pause(env) -> str:
    """A staged rollout of WAVE_TENANTS SIGINTed in its pause after wave 1: its run id."""
    _signalled_in_a_pause(env, signal.SIGINT, "--waves", "1,100%", "--pause-between-waves", "60")
    return str(latest_run()["run_id"])


def test_a_resume_or_undo_of_a_run_another_live_run_resumes_is_refused_and_a_dead_one_does_not_block(steps, tmp_path):
    """A hostile review: two `upgrade --resume R` at once each took the tenants R left (the second
    migrated the group the first was pausing before). While one lives, a second resume of R, and an
    undo of R, are refused (exit 2, one line, nothing written); a --plan only warns; once its
    process is gone (kill -9: still `running` in the ledger) it blocks nothing."""
    at(steps, WAVE_TENANTS, "r1")
    stopped = _stopped_in_a_pause(steps)
    marker = tmp_path / "inside-step-2"
    inside = hash_order(WAVE_TENANTS)[1]  # of the wave left
    first = start(steps, "upgrade", "--resume", stopped, STEPS_SLEEP="60", STEPS_SLEEP_TENANT=inside, STEPS_MARKER=str(marker))
    try:
        wait_for_marker(first, marker, inside)
        resuming = latest_run()
        assert (resuming["resumes"], resuming["state"]) == (stopped, "running")
        runs_before = [r["run_id"] for r in json.loads(cli("runs", "--json").stdout)]
        for args in (["upgrade", "--resume", stopped], ["undo", stopped, "--yes"]):
            refused = cli(*args)
            assert refused.exit_code == 2, (args, refused.output)
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1, (args, refused.stderr)
            assert f"run {stopped} is being resumed by run {resuming['run_id']} (pid {first.pid} " in lines[0], lines
            assert f"`docex-migrate --config {steps.config_file.absolute()} runs show {resuming['run_id']}`" in lines[0], lines
        plan = start(steps, "upgrade", "--resume", stopped, "--plan")  # its warning, as a process prints it
        _, err = plan.communicate(timeout=60)
        assert plan.returncode == 0, err
        assert f"run {stopped} is being resumed by run {resuming['run_id']} (pid {first.pid} " in err, err
        assert [r["run_id"] for r in json.loads(cli("runs", "--json").stdout)] == runs_before
        first.kill()  # kill -9: its row stays `running`, its process is gone
    finally:
        first.kill()
        first.communicate(timeout=30)
    assert latest_run()["state"] == "interrupted"
    again = cli("upgrade", "--resume", stopped)
    assert again.exit_code == 0, again.output
    assert {t: whole(steps, t) for t in WAVE_TENANTS} == dict.fromkeys(WAVE_TENANTS, "r3")


# A closed output pipe


def into_closed_pipe(env, *args: str, read_first_line: bool, close_stderr: bool = False) -> int:
    """Run the command with stdout (and stderr, unless ``close_stderr`` closes it outright)
    into a pipe whose reader goes away: after the first line, as `| head -1` does, or at once."""
    reader, writer = os.pipe()
    environ = {**os.environ, "DOCEX_CONFIG": str(env.config_file), SCRIPT_LOCATION_ENV: str(STEPS)}
    run = subprocess.Popen(
        [sys.executable, "-m", "docex_migrate", *args],
        cwd=env.workdir,
        env=environ,
        stdout=writer,
        stderr=subprocess.DEVNULL if close_stderr else writer,
        preexec_fn=(lambda: os.close(2)) if close_stderr else None,
    )
    os.close(writer)
    if read_first_line:
        with os.fdopen(reader, "rb") as pipe:
            pipe.readline()
    else:
        os.close(reader)
    return run.wait(timeout=120)


PIPED = [f"p{i:02d}" for i in range(30)]


@pytest.mark.parametrize("close_stderr", [False, True], ids=["2>&1", "2>&-"])
def test_a_closed_output_pipe_never_stops_the_run_nor_falsifies_its_ledger(steps, close_stderr):
    at(steps, PIPED, "r1")
    code = into_closed_pipe(steps, "upgrade", "--all-tenants", read_first_line=True, close_stderr=close_stderr)
    assert code == 0
    assert {whole(steps, t) for t in PIPED} == {"r3"}
    run = latest_run()
    assert run["state"] == "finished" and run["counts"] == {"upgraded": 30}


@pytest.mark.parametrize("command", [["runs"], ["runs", "show", "LATEST"], ["status"], ["status", "--json"]])
def test_read_only_commands_into_a_closed_pipe_exit_quietly(steps, command):
    at(steps, PIPED[:3], "r1")
    assert cli("upgrade", "--all-tenants").exit_code == 0
    command = [latest_run()["run_id"] if word == "LATEST" else word for word in command]
    assert into_closed_pipe(steps, *command, read_first_line=False) == 0


# A run waiting on a tenant's lock


@contextlib.contextmanager
def tenant_locked(env, tenant: str) -> Iterator[str]:
    """Hold the tenant's lock as another run would (its file's write lock; its advisory lock,
    as application_name 'holder-in-test'); what a waiting run should name the holder by."""
    if env.kind == "sqlite":
        db = sqlite3.connect(env.namespace(tenant), isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield f"pid {os.getpid()}"
        finally:
            db.close()
        return
    engine = sa.create_engine(env.url, connect_args={"application_name": "holder-in-test"})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:s, 0))"), {"s": env.namespace(tenant)})
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            yield f"pid {pid} (holder-in-test"
    finally:
        engine.dispose()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_run_waiting_on_a_tenant_lock_at_once_and_the_wait_names_the_holder(steps, signum):
    at(steps, TENANTS, "r1")
    with tenant_locked(steps, "k1") as holder:
        run = start(steps, "upgrade", "--all-tenants", "--tenant-lock-wait", "300")
        try:
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.extend(run.stderr), daemon=True)
            reader.start()
            wait_for(lambda: any("waiting" in line for line in lines), 30, f"the run never said it waits: {lines}")
            (line,) = [line for line in lines if "waiting" in line]
            assert "k1" in line and holder in line, line
            time.sleep(1)  # well inside the wait
            sent = time.monotonic()
            os.kill(run.pid, signum)
            run.wait(timeout=60)
            took = time.monotonic() - sent
        finally:
            run.kill()
            run.wait()
            reader.join(10)
            run.stdout.close()
            run.stderr.close()
    err = "".join(lines)
    assert run.returncode == 128 + signum, err
    assert took < 3, f"the run took {took:.1f} s to stop"
    assert [whole(steps, t) for t in TENANTS] == ["r3", "r1", "r1", "r1"]


def test_a_run_waiting_on_a_stopped_run_names_its_process(steps, tmp_path):
    """A run stopped (SIGSTOP) inside a tenant holds its lock for as long as it stays stopped:
    the run that waits for it names its process, so an operator can find it."""
    at(steps, ["k1"], "r1")
    marker = tmp_path / "inside-step-2"
    holder = start(steps, "upgrade", "--tenant", "k1", STEPS_SLEEP="60", STEPS_MARKER=str(marker))
    waiting = None
    try:
        wait_for_marker(holder, marker, "k1")
        os.kill(holder.pid, signal.SIGSTOP)
        waiting = start(steps, "upgrade", "--tenant", "k1", "--tenant-lock-wait", "1")
        _, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 1, err
        assert f"pid {holder.pid}" in err, err  # while it waited, and in the tenant's failure
    finally:
        holder.kill()
        holder.communicate()


# verify --repair: a run of tenants repaired one by one (issue 24)

DOCEX_DROPPED = "DROP INDEX idx_docbasket_status"  # drift verify --repair undoes


def _drifted(env, *tenant_ids: str) -> None:
    assert cli("provision", *tenant_ids).exit_code == 0
    for tenant_id in tenant_ids:
        by_hand(env, tenant_id, DOCEX_DROPPED)


def _repair_run(env) -> dict:
    (run,) = [r for r in json.loads(cli("runs", "--json").stdout) if r["command"] == "repair"]
    return run


def _tenant_lock_waited(env, repair: Running, tenant: str) -> bool:
    """Whether the repair waits for ``tenant``'s lock: SQLite says so on stderr; PostgreSQL's
    advisory lock wait is in pg_locks (only this test's database counts)."""
    if env.kind == "sqlite":
        return "waiting up to" in repair.stderr and env.namespace(tenant) in repair.stderr
    engine = env.engine()
    try:
        with engine.connect() as conn:
            waiting = sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            return bool(conn.execute(waiting).scalar())
    finally:
        engine.dispose()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_the_last_repair_committed_exits_0_and_the_run_is_finished(env, signum):
    """The signal lands once the only repair has committed, while its run is being recorded (the
    ledger's lock is held meanwhile): nothing was left to stop, so the command records and prints
    the run, exits 0, and says the signal came after the work was done."""
    _drifted(env, "drifted")
    assert cli("provision", "fine").exit_code == 0
    with ledger_locked(env):
        repair = Running(env, "verify", "--all-tenants", "--repair", "--yes", "--json")
        repair.signal_when(lambda: waits_for_the_ledger(env, repair), "repaired", signum)
    assert repair.finish() == 0, repair.stderr
    report = report_of(repair.stdout)
    assert (report["ok"], report["interrupted"], report["counts"]) == (True, None, {"ok": 1, "repaired": 1})
    name = signal.Signals(signum).name
    assert f"{name} arrived after the last repair had committed: it stopped nothing" in repair.stderr
    run = _repair_run(env)
    assert (run["run_id"], run["state"], run["counts"]) == (report["run_id"], "finished", {"repaired": 1})
    assert cli("verify", "--all-tenants").exit_code == 0


def test_a_signal_after_one_repair_committed_stops_before_the_next(env):
    """Two tenants to repair; the signal lands once the first has committed, while its result is
    being recorded: the first stays repaired and recorded, the second is not touched (not-run),
    the run is interrupted in the ledger as in --json, exit 143; the advice repairs the rest."""
    _drifted(env, "a_first", "b_second")
    with ledger_locked(env):
        repair = Running(env, "verify", "--all-tenants", "--repair", "--yes", "--json")
        repair.signal_when(lambda: waits_for_the_ledger(env, repair), "repaired the first", signal.SIGTERM)
    assert repair.finish() == 128 + signal.SIGTERM, repair.stderr
    report = report_of(repair.stdout)
    assert (report["command"], report["ok"], report["interrupted"]) == ("verify", False, "SIGTERM")
    rows = {t["tenant_id"]: t for t in report["tenants"]}
    assert {t: r["state"] for t, r in rows.items()} == {"a_first": "repaired", "b_second": "drifted"}
    assert rows["b_second"]["error"] == "not repaired: interrupted by SIGTERM before its turn"
    run = _repair_run(env)
    assert (run["run_id"], run["state"], run["counts"]) == (report["run_id"], "interrupted", {"not-run": 1, "repaired": 1})
    _advice_finishes(env, repair.stderr, report["run_id"])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_repair_rolls_it_back_and_keeps_the_repairs_before_it(env, signum):
    """Stopped while the second tenant's repair waits for its lock (another run holds it): that
    repair rolls back, the first (committed) stays repaired and recorded; --json is the one
    report, interrupted; the ledger's run is interrupted; the advice repairs the rest."""
    _drifted(env, "a_first", "b_second")
    with tenant_locked(env, "b_second"):
        repair = Running(env, "verify", "--all-tenants", "--repair", "--yes", "--json")
        repair.signal_when(lambda: _tenant_lock_waited(env, repair, "b_second"), "waited for b_second", signum)
    assert repair.finish() == 128 + signum, repair.stderr
    name = signal.Signals(signum).name
    report = report_of(repair.stdout)
    assert (report["ok"], report["interrupted"], report["counts"]) == (False, name, {"drifted": 1, "repaired": 1})
    rows = {t["tenant_id"]: t for t in report["tenants"]}
    assert rows["a_first"]["state"] == "repaired"
    assert rows["b_second"]["error"] == f"interrupted by {name} while it was being repaired: rolled back, nothing repaired"
    run = _repair_run(env)
    assert (run["run_id"], run["state"], run["counts"]) == (report["run_id"], "interrupted", {"not-run": 1, "repaired": 1})
    assert rows_of_verify(env) == {"a_first": "ok", "b_second": "drifted"}
    _advice_finishes(env, repair.stderr, report["run_id"])


def test_a_signal_during_the_only_repair_records_nothing(env):
    """The one tenant to repair rolls back: nothing changed, so nothing is recorded (a repair
    that changes nothing records nothing); --json still says what happened."""
    _drifted(env, "only")
    with tenant_locked(env, "only"):
        repair = Running(env, "verify", "--all-tenants", "--repair", "--yes", "--json")
        repair.signal_when(lambda: _tenant_lock_waited(env, repair, "only"), "waited for its lock", signal.SIGINT)
    assert repair.finish() == 128 + signal.SIGINT, repair.stderr
    report = report_of(repair.stdout)
    assert (report["ok"], report["interrupted"], report["run_id"], report["counts"]) == (False, "SIGINT", None, {"drifted": 1})
    assert "interrupted by SIGINT: any repair in flight was rolled back; nothing was repaired" in repair.stderr
    assert not [r for r in json.loads(cli("runs", "--json").stdout) if r["command"] == "repair"]
    assert rows_of_verify(env) == {"only": "drifted"}


def rows_of_verify(env) -> dict[str, str]:
    return {r["tenant_id"]: r["state"] for r in json.loads(cli("verify", "--all-tenants", "--json").stdout)}


def _advice_finishes(env, stderr: str, run_id: str) -> None:
    """The stop names the run that recorded the repairs made, and a command that repairs the rest."""
    advice = re.search(rf"repairs committed before it are recorded in run {run_id}; to finish, run `(.+)`", stderr)
    assert advice, stderr
    again = shlex.split(advice[1])
    assert again[0] == "docex-migrate"
    result = cli(*again[1:])
    assert result.exit_code == 0, result.output
    assert set(rows_of_verify(env).values()) == {"ok"}

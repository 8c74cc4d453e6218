"""Processes, signals and connection limits: what a killed, interrupted or starved run leaves
behind and reports. Real subprocesses of `python -m docex_migrate` on the small chain in
tests/chains/steps, whose step 2 can sleep (STEPS_SLEEP) and name the tenant inside it
(STEPS_MARKER), so a test can act while tenants are in flight.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from helpers import applied, reported, start, version_of

from docex_migrate.backends import backend_for
from docex_migrate.config import load_settings
from docex_migrate.errors import DatabaseUnavailableError
from docex_migrate.runner import migrate_tenant


@pytest.fixture
def spawned() -> Iterator[set[int]]:
    """Pids of processes a test saw a run start; any still alive at the end are killed, so a
    failing test never leaves a worker behind to commit into the next one."""
    pids: set[int] = set()
    yield pids
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited; only its reaping is left


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[1] == str(pid):
            found.add(int(entry.name))
    return found


def wait_for(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def in_step_2(run: subprocess.Popen, marker: Path, tenant: str | None = None) -> None:
    """Wait until some tenant (or ``tenant``) is inside step 2, its transaction open."""

    def there() -> bool:
        assert run.poll() is None, run.communicate()
        return marker.exists() and (tenant is None or marker.read_text() == tenant)

    wait_for(there, 90, f"no tenant {tenant or ''} reached step 2")


def whole(env, tenant_id: str) -> str:
    """The tenant's revision, after checking it is all of that revision and nothing more."""
    (revision,) = version_of(env, tenant_id)
    assert revision in ("r1", "r3"), (tenant_id, revision)
    assert applied(env, tenant_id) == (["r1"] if revision == "r1" else ["r1", "r2", "r3"]), tenant_id
    return revision


def open_transactions(env) -> int:
    """Sessions of this test database left idle in a transaction (a migration still open)."""
    with env.engine().connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        ).scalar()


def at_r1(env, tenants: list[str]) -> None:
    backend = env.backend
    try:
        for tenant in tenants:
            migrate_tenant(backend, tenant, "r1", create=True)
    finally:
        backend.dispose()


def jobs_run_in_step_2(env, tenants: list[str], tmp_path: Path, spawned: set[int], *flags: str):
    """`upgrade --all-tenants --jobs 2` over ``tenants`` (at r1), once two tenants are inside
    step 2's open transaction; the run and its worker processes."""
    at_r1(env, tenants)
    marker = tmp_path / "inside-step-2"
    run = start(
        env, "upgrade", "--all-tenants", "--jobs", "2", *flags,
        STEPS_SLEEP="30", STEPS_MARKER=str(marker),
    )  # fmt: skip
    in_step_2(run, marker)
    time.sleep(1)  # the second worker into step 2 as well
    workers = children(run.pid)
    spawned.update(workers)
    return run, workers


def test_kill_9_of_the_cli_takes_its_workers_and_their_transactions_with_it(steps, tmp_path, spawned):
    env = steps
    tenants = [f"k{i}" for i in range(4)]
    run, workers = jobs_run_in_step_2(env, tenants, tmp_path, spawned)
    assert len(workers) >= 2, workers
    if env.kind == "postgres":
        assert open_transactions(env) >= 1

    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    wait_for(lambda: not any(map(alive, workers)), 10, f"workers outlived the CLI: {[p for p in workers if alive(p)]}")
    run.communicate(timeout=10)  # EOF on stdout and stderr: nobody holds the pipes any more
    if env.kind == "postgres":
        wait_for(lambda: open_transactions(env) == 0, 10, "a worker's transaction is still open")
    time.sleep(1)
    assert {whole(env, t) for t in tenants} == {"r1"}  # the in-flight ones rolled back, none committed later


def test_sigterm_with_jobs_stops_the_workers_and_reports(steps, tmp_path, spawned):
    env = steps
    tenants = [f"s{i}" for i in range(5)]
    run, workers = jobs_run_in_step_2(env, tenants, tmp_path, spawned, "--json")

    sent = time.monotonic()
    os.kill(run.pid, signal.SIGTERM)
    out, err = run.communicate(timeout=30)
    assert time.monotonic() - sent < 15, "the run did not stop promptly"
    assert run.returncode == 143, err
    wait_for(lambda: not any(map(alive, workers)), 5, f"workers outlived the CLI: {[p for p in workers if alive(p)]}")
    rows = {r["tenant_id"]: r for r in reported(out)}
    assert list(rows) == tenants
    assert {r["action"] for r in rows.values()} == {"not-run"}
    in_flight = [t for t, r in rows.items() if "rolled back" in r["message"]]
    assert len(in_flight) == 2, rows
    assert all("SIGTERM" in r["message"] for r in rows.values())
    assert "interrupted by SIGTERM" in err and "5 not-run" in err
    if env.kind == "postgres":
        wait_for(lambda: open_transactions(env) == 0, 10, "a worker's transaction is still open")
    assert {whole(env, t) for t in tenants} == {"r1"}


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupting_a_serial_run_reports_what_was_done(steps, tmp_path, signum, code):
    env = steps
    tenants = ["a", "b", "c"]
    at_r1(env, tenants)
    marker = tmp_path / "inside-step-2"
    run = start(env, "upgrade", "--all-tenants", STEPS_SLEEP="1.5", STEPS_MARKER=str(marker))
    in_step_2(run, marker, "b")  # a is done and committed; b is in flight

    os.kill(run.pid, signum)
    out, err = run.communicate(timeout=30)
    assert run.returncode == code, err
    name = signal.Signals(signum).name
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in tenants}
    assert "upgraded" in lines["a"] and "r1 -> r3" in lines["a"]
    assert "not-run" in lines["b"] and "rolled back" in lines["b"] and name in lines["b"]
    assert "not-run" in lines["c"] and "not attempted" in lines["c"]
    assert "1 upgraded" in out and "2 not-run" in out
    assert f"interrupted by {name}" in err
    assert [whole(env, t) for t in tenants] == ["r3", "r1", "r1"]


# Connection limits. Superusers are exempt from CONNECTION LIMIT, so these run as a plain role.


@pytest.fixture
def limited_role(pg_steps, tmp_path) -> Iterator[tuple[str, Path]]:
    """A login role (name, config file) that owns the test's tenants, CONNECTION LIMIT 10."""
    env = pg_steps
    role = f"docex_limited_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(env.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 10")
        conn.exec_driver_sql(f'GRANT CREATE ON DATABASE "{env.url.database}" TO {role}')
    config = yaml.safe_load(env.config_file.read_text())
    config["database"]["postgres"]["user"] = role
    config_file = tmp_path / "limited.yaml"
    config_file.write_text(yaml.safe_dump(config))
    try:
        yield role, config_file
    finally:
        with admin.connect() as conn:
            sessions = f"FROM pg_stat_activity WHERE usename = '{role}'"
            conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) {sessions}")
            wait_for(
                lambda: not conn.exec_driver_sql(f"SELECT count(*) {sessions}").scalar(), 10, "sessions outlived termination"
            )
            conn.exec_driver_sql(f"DROP OWNED BY {role}")  # its schemas, and its grant on the database
            conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()


def at_r1_as(config_file: Path, tenants: list[str]) -> None:
    backend = backend_for(load_settings(config_file))
    try:
        for tenant in tenants:
            migrate_tenant(backend, tenant, "r1", create=True)
    finally:
        backend.dispose()


@pytest.mark.parametrize("limited", ["ROLE", "DATABASE"])
def test_jobs_are_capped_by_the_connection_limit(pg_steps, limited_role, limited):
    env, (role, config_file) = pg_steps, limited_role
    tenants = [f"c{i}" for i in range(4)]
    at_r1_as(config_file, tenants)
    name = role if limited == "ROLE" else f'"{env.url.database}"'
    with env.engine().connect() as conn:
        conn.exec_driver_sql(f"ALTER {limited} {name} CONNECTION LIMIT 2")
        conn.commit()
    try:
        run = start(env, "upgrade", "--all-tenants", "--jobs", "4", "--json", DOCEX_CONFIG=str(config_file), STEPS_SLEEP="2")
        out, err = run.communicate(timeout=120)
    finally:
        with env.engine().connect() as conn:
            conn.exec_driver_sql(f"ALTER {limited} {name} CONNECTION LIMIT -1")
            conn.commit()
    assert run.returncode == 0, err
    assert "--jobs 4 lowered to 1" in err
    assert [r["action"] for r in reported(out)] == ["upgraded"] * 4
    assert [whole(env, t) for t in tenants] == ["r3"] * 4


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_connection_refused_mid_run_reports_the_results_so_far(pg_steps, limited_role, tmp_path, jobs):
    env, (role, config_file) = pg_steps, limited_role
    tenants = [f"m{i}" for i in range(6)]
    at_r1_as(config_file, tenants)
    marker = tmp_path / "inside-step-2"
    run = start(
        env, "upgrade", "--all-tenants", "--jobs", jobs, "--json",
        DOCEX_CONFIG=str(config_file), STEPS_SLEEP="2", STEPS_MARKER=str(marker),
    )  # fmt: skip
    if jobs == "1":
        in_step_2(run, marker, "m1")  # m0 is done, m1 in flight
    else:
        in_step_2(run, marker)
        wait_for(lambda: open_transactions(env) == 2, 30, "m0 and m1 never both in flight")
    with env.engine().connect() as conn:
        conn.exec_driver_sql(f"ALTER ROLE {role} CONNECTION LIMIT 0")  # the sessions open stay; no new one is let in
        # Tenants share their process's connection, so only a tenant that needs a new one meets the
        # limit: end the open sessions (their tenants fail, rolled back), and the next must connect.
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        conn.commit()
    out, err = run.communicate(timeout=120)

    assert run.returncode == 1, err
    rows = {r["tenant_id"]: r for r in reported(out)}
    assert list(rows) == tenants
    in_flight = ["m1"] if jobs == "1" else ["m0", "m1"]
    assert [rows[t]["action"] for t in ("m0", "m1")] == ["upgraded" if t not in in_flight else "failed" for t in ("m0", "m1")]
    assert rows["m2"]["action"] == "failed"
    cause = rows["m2"]["message"]
    assert f'too many connections for role "{role}"' in cause and "CONNECTION LIMIT" in cause
    assert "has no user" not in cause
    assert rows["m3"]["action"] in ("failed", "not-run")
    assert [rows[t]["action"] for t in ("m4", "m5")] == ["not-run", "not-run"]
    assert "too many connections" in rows["m5"]["message"]
    assert "m2" in err and "too many connections" in err  # the summary, on stderr with --json
    for tenant, row in rows.items():
        assert whole(env, tenant) == ("r3" if row["action"] == "upgraded" else "r1")


@pytest.mark.postgres
def test_a_connection_slot_being_freed_is_waited_for_not_refused(pg_env):
    """A session just closed still counts against CONNECTION LIMIT until its server process has
    exited: a role allowed one connection was refused its next one on a busy server (seen as a
    flaky one-connection test). The slot freed within the wait is taken; one that stays taken
    still fails with the advice, after the bounded wait."""
    from docex_migrate import api

    role = f"slot_{uuid.uuid4().hex[:8]}"
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        conn.exec_driver_sql(f'GRANT ALL ON DATABASE "{pg_env.url.database}" TO {role}')
    held = sa.create_engine(pg_env.url.set(username=role), poolclass=sa.pool.NullPool)
    try:
        data = yaml.safe_load(pg_env.config_file.read_text())
        data["database"]["postgres"]["user"] = role
        pg_env.config_file.write_text(yaml.safe_dump(data))
        settings = load_settings()
        holder = held.connect()  # the role's one slot, taken
        closer = threading.Timer(0.5, holder.close)
        closer.start()
        (result,) = api.provision(settings, ["acme"])
        closer.join()
        assert not result.failed, result.message
        with held.connect(), pytest.raises(DatabaseUnavailableError, match=f'too many connections for role "{role}"'):
            started = time.monotonic()  # the slot, taken for good
            api.provision(settings, ["globex"])
        assert 1.5 < time.monotonic() - started < 30
        assert not pg_env.exists("globex")
    finally:
        held.dispose()
        with pg_env.engine().begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


def test_a_worker_killed_fails_its_tenant_and_the_run_reports(steps, tmp_path, spawned):
    env = steps
    tenants = [f"w{i}" for i in range(5)]
    run, workers = jobs_run_in_step_2(env, tenants, tmp_path, spawned, "--json")
    victim = next(p for p in workers if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes())  # not the resource tracker
    os.kill(victim, signal.SIGKILL)  # the OOM killer, say

    out, err = run.communicate(timeout=90)  # the CLI's own tenant sleeps out its 30 s
    assert run.returncode == 1, err
    rows = {r["tenant_id"]: r for r in reported(out)}
    assert list(rows) == tenants
    # The worker had w0; the CLI migrates w1 itself (--jobs 2 is itself and one worker) and
    # finishes it, then hands out nothing more.
    assert {t: r["action"] for t, r in rows.items()} == {
        "w0": "failed", "w1": "upgraded", "w2": "not-run", "w3": "not-run", "w4": "not-run"
    }, rows  # fmt: skip
    assert "a worker process died: rolled back" in rows["w0"]["message"]
    wait_for(lambda: not any(map(alive, workers)), 5, "workers outlived the CLI")
    assert {t: whole(env, t) for t in tenants} == {t: "r3" if t == "w1" else "r1" for t in tenants}


@pytest.mark.postgres
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_session_ended_by_the_server_while_the_run_plans_costs_nothing(pg_env, monkeypatch, jobs):
    """Found in review of a speed-up that kept the bulk read's session for the tenants: a server
    that ends idle sessions (idle_session_timeout, a pooler, a NAT) while the run plans must not
    fail the first tenant, nor the run."""
    from docex_migrate import api, migration

    ids = ["acme", "beta"]
    api.provision(pg_env.settings, ids)
    api.downgrade(pg_env.settings, ids, "s6_docex_2_8_8")
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{pg_env.url.database}" SET idle_session_timeout = 500')
    real = migration.hold_back_drifted

    def slow(*args, **kwargs):  # stands for verifying a large fleet before the upgrade
        try:
            return real(*args, **kwargs)
        finally:
            time.sleep(1.5)

    monkeypatch.setattr(migration, "hold_back_drifted", slow)
    try:
        results = api.upgrade(pg_env.settings, ids, "head", verify_first=True, jobs=jobs)
    finally:
        with pg_env.engine().begin() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{pg_env.url.database}" RESET idle_session_timeout')
    assert [r.action for r in results] == ["upgraded", "upgraded"], [r.message for r in results]


@pytest.mark.postgres
def test_a_kept_connection_the_server_ended_between_tenants_costs_nothing(pg_env, monkeypatch):
    """Found in review: the connection kept for the next tenant, ended by the server while idle
    (pg_terminate_backend, a pooler or a server restart), failed that tenant with "the connection
    is lost"; a session the server has ended is now seen, without a round trip, and replaced."""
    from docex_migrate import api, executors

    ids = ["acme", "beta", "gamma"]
    api.provision(pg_env.settings, ids)
    api.downgrade(pg_env.settings, ids, "s6_docex_2_8_8")
    real, ended = executors.run_item, []

    def ending_the_kept_session(*args, **kwargs):
        with pg_env.engine().connect() as conn:  # the kept session is the one whose last statement reset it
            ended.extend(
                conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND state = 'idle' AND query = 'DISCARD ALL'"
                ).scalars()
            )
        time.sleep(0.2)  # the server's goodbye reaches the client
        return real(*args, **kwargs)

    monkeypatch.setattr(executors, "run_item", ending_the_kept_session)
    results = api.upgrade(pg_env.settings, ids, "head")
    assert [r.action for r in results] == ["upgraded"] * 3, [r.message for r in results]
    assert ended == [True, True]  # before the second and the third tenant


@pytest.mark.postgres
def test_a_role_allowed_one_connection_can_provision_and_deprovision(pg_env):
    """No command holds a second session while it works: found in review of a speed-up that kept
    the bulk read's session open while deprovision opened its own."""
    from docex_migrate import api

    role = f"one_{uuid.uuid4().hex[:8]}"
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        conn.exec_driver_sql(f'GRANT ALL ON DATABASE "{pg_env.url.database}" TO {role}')
    try:
        data = yaml.safe_load(pg_env.config_file.read_text())
        data["database"]["postgres"]["user"] = role
        pg_env.config_file.write_text(yaml.safe_dump(data))
        settings = load_settings()
        (result,) = api.provision(settings, ["acme"])
        assert not result.failed, result.message
        api.deprovision(settings, "acme", backup_dir=None)
        assert not pg_env.exists("acme")
    finally:
        with pg_env.engine().begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")

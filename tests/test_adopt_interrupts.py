"""adopt stopped by a signal reports like any other changing command (as upgrade does): --json is
the one report with ``interrupted`` set, each tenant adopted before the signal, the one in
flight rolled back, the rest not-run; the run is recorded interrupted; stderr names a command
that finishes the job, run here verbatim. A signal that lands once a tenant's stamp has
committed never turns that tenant into one not adopted (interrupts.hold). Real subprocesses and
real signals, both backends; the signal is sent while the test holds the run ledger's write
lock (the first adoption has committed, its run is not yet recorded) or a tenant's lock (that
tenant's adoption waits for it).
"""

from __future__ import annotations

import json
import re
import shlex
import signal

import pytest
from helpers import DOCEX_2_9_10, cli, head, report_of, version_of
from test_adoption import build_legacy, legacy_ddl
from test_interrupts import _tenant_lock_waited, tenant_locked
from test_restore import Running, ledger_locked, waits_for_the_ledger

LEGACY = ["b_first", "c_second"]


def _fleet(env, legacy: list[str]) -> None:
    """A versioned tenant (it also makes the run ledger, which the test locks) and tenants DocEX
    created itself, which adopt takes in order after it."""
    assert cli("provision", "a_versioned").exit_code == 0
    for tenant in legacy:
        build_legacy(env, tenant, legacy_ddl(env, DOCEX_2_9_10, tenant))


def _adopt_run(env) -> dict | None:
    found = [r for r in json.loads(cli("runs", "--json").stdout) if r["command"] == "adopt"]
    assert len(found) <= 1, found
    return found[0] if found else None


def _actions(report: dict) -> dict[str, str]:
    return {t["tenant_id"]: t["action"] for t in report["tenants"]}


def _advice_finishes(env, stderr: str) -> None:
    """The command stderr names is run as printed: it adopts the rest, and leaves alone those
    adopted already."""
    advice = re.search(r"to finish, run `(.+)`", stderr)
    assert advice, stderr
    again = shlex.split(advice[1])
    assert again[0] == "docex-migrate" and "adopt" in again and "--all-tenants" in again, again
    result = cli(*again[1:], "--json")
    assert result.exit_code == 0, result.output
    assert _actions(report_of(result.stdout)) == {"a_versioned": "skipped", "b_first": "skipped", "c_second": "adopted"}
    assert all(version_of(env, t) for t in LEGACY)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_one_adoption_committed_stops_before_the_next_and_reports_it(env, signum):
    """The signal lands once b_first's stamp has committed, while its result is being recorded:
    b_first stays adopted (in --json, the ledger and the tenant), c_second is not touched
    (not-run), the run is interrupted, exit 130 / 143, and the advice adopts the rest. It printed
    only `interrupted by SIGINT`: no JSON, no summary, no advice."""
    _fleet(env, LEGACY)
    with ledger_locked(env):
        adopt = Running(env, "adopt", "--all-tenants", "--json")
        adopt.signal_when(lambda: waits_for_the_ledger(env, adopt), "adopted b_first", signum)
    assert adopt.finish() == 128 + signum, adopt.stderr
    name = signal.Signals(signum).name
    report = report_of(adopt.stdout)
    assert (report["command"], report["ok"], report["interrupted"]) == ("adopt", False, name)
    assert _actions(report) == {"a_versioned": "skipped", "b_first": "adopted", "c_second": "not-run"}
    (second,) = [t for t in report["tenants"] if t["tenant_id"] == "c_second"]
    assert second["message"] == f"not adopted: interrupted by {name} before its turn"
    assert version_of(env, "b_first") and not version_of(env, "c_second")
    run = _adopt_run(env)
    assert run is not None
    assert (run["run_id"], run["state"]) == (report["run_id"], "interrupted")
    assert run["counts"] == {"adopted": 1, "not-run": 1, "skipped": 1}
    assert f"adoptions committed before it are recorded in run {run['run_id']}" in adopt.stderr
    _advice_finishes(env, adopt.stderr)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_an_adoption_rolls_it_back_and_keeps_the_adoptions_before_it(env, signum):
    """Stopped while c_second's stamp waits for its lock (another run holds it): that adoption
    rolls back, b_first (committed) stays adopted and recorded; --json is the one report; the
    run is interrupted; the advice adopts the rest."""
    _fleet(env, LEGACY)
    with tenant_locked(env, "c_second"):
        adopt = Running(env, "adopt", "--all-tenants", "--json")
        adopt.signal_when(lambda: _tenant_lock_waited(env, adopt, "c_second"), "waited for c_second", signum)
    assert adopt.finish() == 128 + signum, adopt.stderr
    name = signal.Signals(signum).name
    report = report_of(adopt.stdout)
    assert (report["ok"], report["interrupted"]) == (False, name)
    assert _actions(report) == {"a_versioned": "skipped", "b_first": "adopted", "c_second": "not-run"}
    (second,) = [t for t in report["tenants"] if t["tenant_id"] == "c_second"]
    assert second["message"] == f"interrupted by {name} while it was being adopted: rolled back, nothing changed"
    assert second["from_revision"] is None and second["to_revision"] is None
    assert version_of(env, "b_first") and not version_of(env, "c_second")
    run = _adopt_run(env)
    assert run is not None and (run["run_id"], run["state"]) == (report["run_id"], "interrupted")
    assert run["counts"] == {"adopted": 1, "not-run": 1, "skipped": 1}
    _advice_finishes(env, adopt.stderr)


def test_a_signal_during_the_only_adoption_records_nothing_and_the_advice_adopts_it(env):
    """The one tenant to adopt rolls back: nothing changed, so nothing is recorded; --json and
    stderr still say what happened, and the advice adopts it."""
    _fleet(env, ["c_second"])
    with tenant_locked(env, "c_second"):
        adopt = Running(env, "adopt", "--all-tenants", "--json")
        adopt.signal_when(lambda: _tenant_lock_waited(env, adopt, "c_second"), "waited for c_second", signal.SIGINT)
    assert adopt.finish() == 128 + signal.SIGINT, adopt.stderr
    report = report_of(adopt.stdout)
    assert (report["ok"], report["interrupted"], report["run_id"]) == (False, "SIGINT", None)
    assert _actions(report) == {"a_versioned": "skipped", "c_second": "not-run"}
    assert "interrupted by SIGINT: any adoption in flight was rolled back; nothing was adopted" in adopt.stderr
    assert _adopt_run(env) is None and not version_of(env, "c_second")
    advice = re.search(r"to finish, run `(.+)`", adopt.stderr)
    assert advice, adopt.stderr
    assert cli(*shlex.split(advice[1])[1:]).exit_code == 0
    assert version_of(env, "c_second")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_the_last_adoption_committed_exits_0_and_the_run_is_finished(env, signum):
    """The signal lands once the last tenant's stamp has committed, while its run is being
    recorded: nothing was left to stop, so adopt records and prints the run, exits 0, and says
    the signal came after the work was done."""
    _fleet(env, ["c_second"])
    with ledger_locked(env):
        adopt = Running(env, "adopt", "--all-tenants", "--json")
        adopt.signal_when(lambda: waits_for_the_ledger(env, adopt), "adopted c_second", signum)
    assert adopt.finish() == 0, adopt.stderr
    report = report_of(adopt.stdout)
    assert (report["ok"], report["interrupted"]) == (True, None)
    assert _actions(report) == {"a_versioned": "skipped", "c_second": "adopted"}
    name = signal.Signals(signum).name
    assert f"{name} arrived after the last adoption had committed: it stopped nothing" in adopt.stderr
    run = _adopt_run(env)
    assert run is not None and (run["run_id"], run["state"]) == (report["run_id"], "finished")
    assert version_of(env, "c_second")


def test_named_tenants_are_named_again_in_the_advice(env):
    """adopt takes its tenants as arguments (there is no --tenant): the advice after a stop names
    them that way, and works."""
    _fleet(env, LEGACY)
    with tenant_locked(env, "c_second"):
        adopt = Running(env, "adopt", "b_first", "c_second")
        adopt.signal_when(lambda: _tenant_lock_waited(env, adopt, "c_second"), "waited for c_second", signal.SIGTERM)
    assert adopt.finish() == 128 + signal.SIGTERM, adopt.stderr
    assert re.search(r"^c_second\s+\S+\s+(not-run|NOT-RUN)\s", adopt.stdout, re.M), adopt.stdout  # the table, as upgrade's
    advice = re.search(r"to finish, run `(.+)`", adopt.stderr)
    assert advice, adopt.stderr
    again = shlex.split(advice[1])
    assert again[-3:] == ["adopt", "b_first", "c_second"], again
    assert cli(*again[1:]).exit_code == 0
    assert all(version_of(env, t) for t in LEGACY)


def test_upgrade_adopt_stopped_while_adopting_reports_every_tenant_and_rerunning_it_finishes(env):
    """upgrade --adopt stopped during its adoptions printed only `interrupted by SIGTERM`. Now
    its report lists every tenant: b_first adopted but not upgraded (not-run, at the revision it
    was stamped at), c_second rolled back (not-run), a_versioned already at the target
    (skipped); the same command run again finishes the job."""
    _fleet(env, LEGACY)
    with tenant_locked(env, "c_second"):
        upgrade = Running(env, "upgrade", "--all-tenants", "--adopt", "--json")
        upgrade.signal_when(lambda: _tenant_lock_waited(env, upgrade, "c_second"), "waited for c_second", signal.SIGTERM)
    assert upgrade.finish() == 128 + signal.SIGTERM, upgrade.stderr
    report = report_of(upgrade.stdout)
    assert (report["command"], report["ok"], report["interrupted"]) == ("upgrade", False, "SIGTERM")
    assert _actions(report) == {"a_versioned": "skipped", "b_first": "not-run", "c_second": "not-run"}
    (first,) = [t for t in report["tenants"] if t["tenant_id"] == "b_first"]
    assert first["message"].startswith("stamped at ") and first["message"].endswith(
        "not upgraded: interrupted by SIGTERM before its turn"
    )
    assert (first["from_revision"],) == version_of(env, "b_first")
    assert not version_of(env, "c_second")
    assert "rerun the same command to finish" in upgrade.stderr
    result = cli("upgrade", "--all-tenants", "--adopt")
    assert result.exit_code == 0, result.output
    assert all(version_of(env, t) == (head(),) for t in ["a_versioned", *LEGACY])

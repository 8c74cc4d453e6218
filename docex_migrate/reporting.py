"""What the commands print: aligned human tables, or JSON on stdout (human text then on stderr).

It knows the values the commands return (results.py, states.TenantStatus), never the modules
that compute them."""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from . import streams
from .errors import Interrupted
from .results import (
    ALREADY_AT_TARGET,
    DRIFTED,
    MAX_DIFF,
    OK,
    REPAIR_FAILED,
    REPAIRED,
    UNKNOWN_ADOPTION,
    UNVERSIONED,
    Action,
    CheckResult,
    CheckStatus,
    CommandReport,
    Deprovisioned,
    Restored,
    RevisionInfo,
    RunDetail,
    RunInfo,
    RunTenant,
    TenantDrift,
    TenantResult,
)
from .states import State, TenantStatus


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


class Reporter:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.human: TextIO = sys.stderr if as_json else sys.stdout

    def say(self, line: str) -> None:
        self.human.write(line + "\n")

    def warn(self, line: str) -> None:
        sys.stderr.write(f"warning: {line}\n")

    def emit_json(self, payload: object) -> None:
        streams.carries_json()
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")

    def table(self, rows: Sequence[Sequence[str]]) -> None:
        _table(rows, self.human)

    def statuses(self, rows: list[TenantStatus], empty: str) -> None:
        """The table (or JSON, unchanged), then one line counting the tenants per state."""
        if self.as_json:
            self.emit_json([r.as_dict() for r in rows])
        elif rows:
            _table(
                [("TENANT", "NAMESPACE", "REVISION", "STATE")]
                + [(r.tenant_id, r.namespace, _status_revision(r), _state(r)) for r in rows],
                self.human,
            )
        if not rows:
            self.say(empty)
            return
        counts = Counter(r.state for r in rows)
        per_state = ", ".join(f"{counts[state]} {state.value}" for state in State if counts[state])
        self.say(f"{len(rows)} tenant{'s' if len(rows) != 1 else ''}: {per_state}")

    def checks(self, results: list[CheckResult]) -> None:
        backends = _backends_covered(results)
        if self.as_json:
            self.emit_json(
                {
                    "passed": all(r.status in (CheckStatus.PASSED, CheckStatus.SKIPPED) for r in results),
                    "backends": backends,
                    "checks": [r.as_dict() for r in results],
                }
            )
        for line in _check_lines(results):
            self.say(line)
        counts = Counter(r.status.value for r in results)
        covered = f" (database checks on {' and '.join(backends)})" if backends else ""
        self.say(", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + covered)

    def drift(self, rows: list[TenantDrift], report: CommandReport | None = None) -> None:
        """verify: the tenants that are not exactly their revision, their diff and repairs. With
        ``report`` (verify --repair, a changing command), --json is that one object."""
        if self.as_json:
            self.emit_json(report.as_dict() if report is not None else [r.as_dict() for r in rows])
        if not rows:
            self.say("no tenants found")
            return
        shown = [r for r in rows if r.state != OK]
        if shown:
            _table(
                [("TENANT", "NAMESPACE", "REVISION", "STATE")]
                + [(r.tenant_id, r.namespace, _drift_revision(r), _drift_label(r)) for r in shown],
                self.human,
            )
            for r in shown:
                self._drift_lines(r)
        for r in rows:  # deliberate differences, declared in the config file: listed, never drift
            for line in r.excused:
                self.say(f"  {r.tenant_id}: {line}")
        counts = Counter(r.state for r in rows)
        compared = (OK, DRIFTED, REPAIRED, REPAIR_FAILED)
        catalogs = len({(r.revision, r.fingerprint) for r in rows if r.fingerprint and r.state in compared})
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        excused = sum(1 for r in rows if r.excused)
        if counts.get(OK) == len(rows):
            summary = f"all {len(rows)} tenant(s) {'match' if excused else 'are exactly'} their revision"
        also = f", {excused} with excused differences" if excused else ""
        self.say(f"{summary}{also} ({catalogs} distinct catalog(s) compared)")

    def _drift_lines(self, r: TenantDrift) -> None:
        lines = r.diff if r.state in (DRIFTED, REPAIR_FAILED) else []
        for line in lines[:MAX_DIFF]:
            self.say(f"  {r.tenant_id}: {line}")
        if len(lines) > MAX_DIFF:
            self.say(f"  {r.tenant_id}: ... and {len(lines) - MAX_DIFF} more (--json has them all)")
        verb = {REPAIRED: "repaired", REPAIR_FAILED: "repair tried, rolled back"}.get(r.state, "repair would")
        for line in r.repairs if r.state in (DRIFTED, REPAIRED, REPAIR_FAILED) else []:
            self.say(f"  {r.tenant_id}: {verb}: {line}")
        if r.state == DRIFTED and r.error:
            self.say(f"  {r.tenant_id}: {r.error}")

    def runs(self, found: list[RunInfo]) -> None:
        if self.as_json:
            self.emit_json([r.as_dict() for r in found])
        elif not found:
            self.say("no runs recorded")
        else:
            self.table([("RUN", "COMMAND", "TARGET", "STARTED", "FINISHED", "STATE", "TENANTS")] + [_run_row(r) for r in found])

    def run_detail(self, detail: RunDetail) -> None:
        if self.as_json:
            self.emit_json(detail.as_dict())
            return
        r = detail.run
        self.say(f"run {r.run_id}: {r.command} {r.selection} -> {r.target or '-'}, {r.state}")
        extra = f", resumes {r.resumes}" if r.resumes else f", undoes {r.undoes}" if r.undoes else ""
        self.say(f"by {r.user} on {r.host} (pid {r.pid}), docex-migrate {r.version}, chain head {r.chain_head}{extra}")
        self.say(f"started {r.started_at}, finished {r.finished_at or '-'}{': ' + r.error if r.error else ''}")
        if r.staging is not None and "canary" in r.staging:
            self.say(f"staged: {_staging(r.staging, r.resumes)} (`upgrade --resume` keeps its groups and pause)")
        elif r.staging is not None and r.staging.get("adopt"):
            self.say("adopts unversioned tenants first (`upgrade --resume` does too)")
        if detail.tenants:
            self.table(
                [("TENANT", "ACTION", "FROM", "TO", "MS", "MESSAGE")]
                + [
                    (t.tenant_id, t.action, t.from_revision or "base", _reached(t), str(t.duration_ms or "-"), t.message)
                    for t in detail.tenants
                ]
            )

    def tenants(self, found: dict[str, str]) -> None:
        if self.as_json:
            self.emit_json([{"tenant_id": t, "namespace": ns} for t, ns in found.items()])
            return
        if not found:
            self.say("no tenants found")
        for tenant_id, namespace in found.items():
            self.say(f"{tenant_id}\t{namespace}")

    def history(self, revisions: list[RevisionInfo]) -> None:
        if self.as_json:
            self.emit_json([r.as_dict() for r in revisions])
            return
        for r in revisions:
            self.say(f"{r.down_revision or '<base>'} -> {r.revision}{' (head)' if r.head else ''}, {r.doc}")

    def heads(self, found: list[str]) -> None:
        if self.as_json:
            self.emit_json(found)
            return
        for head in found:
            self.say(head)

    def deprovisioned(self, done: Deprovisioned, run_id: str | None = None) -> None:
        if self.as_json:
            report = CommandReport("deprovision", [done.as_result()], run_id=run_id)
            self.emit_json({**report.as_dict(), "restore": done.restore})
        for warning in done.warnings:
            self.warn(warning)
        backup = f"; backup in {done.backup}" if done.backup else "; no backup written"
        self.say(f"{done.tenant_id}: {done.namespace} removed{backup}")
        if done.restore:
            self.say(f"to bring it back: {done.restore}")

    def restored(self, done: Restored, *, late: int | None = None) -> None:
        """restore: the tenant, where it came from, its revision, and what to run next; ``late``,
        a signal that arrived after it committed (it stopped nothing)."""
        if self.as_json:
            self.emit_json(done.as_dict())
        result = done.result
        revision = result.to_revision or "base"
        for path, run in done.newer:
            self.warn(
                f"{result.tenant_id} was deprovisioned again since this backup (run {done.deprovisioned_by}) was written: "
                f"a newer backup of it is {path} (deprovision run {run}); this restore brought back the older one"
            )
        self.say(f"{result.tenant_id}: {result.namespace} {result.message}, at revision {revision}")
        if done.behind:
            self.say(f"{result.tenant_id} is behind the head ({done.head}): bring it there with `{done.upgrade}`")
        if done.run_id:
            self.say(f"run {done.run_id} recorded: `{done.show}`")
        self.late_signal(late, f"the restore of {result.tenant_id} had committed", done.run_id)

    def restore_stopped(self, stop: Interrupted, again: str) -> None:
        """restore stopped by a signal before its commit: the report (the tenant not-run), and on
        stderr what happened and the command that restores it."""
        results = [r for r in stop.results or [] if isinstance(r, TenantResult)]
        report = CommandReport("restore", results, interrupted=stop.signal_name)
        if results:
            self.results(report)
        elif self.as_json:  # stopped before it knew its tenant: the report all the same
            self.emit_json(report.as_dict())
        self._stopped(stop.signal_name, "the restore was rolled back: nothing was restored and nothing recorded", again)

    def repair_stopped(self, stop: Interrupted, run_id: str | None, again: str) -> None:
        """verify --repair stopped by a signal: the report (every tenant's verdict), and on
        stderr what happened, the run that recorded the repairs made, and the command that
        repairs the rest."""
        verdicts = [r for r in stop.results or [] if isinstance(r, TenantDrift)]
        report = CommandReport("verify", verdicts, run_id=run_id, interrupted=stop.signal_name)
        if verdicts:
            self.drift(verdicts, report)
        elif self.as_json:  # stopped before any tenant was judged: the report all the same
            self.emit_json(report.as_dict())
        done = f"repairs committed before it are recorded in run {run_id}" if run_id else "nothing was repaired"
        self._stopped(stop.signal_name, f"any repair in flight was rolled back; {done}", again)

    def adopt_stopped(self, stop: Interrupted, run_id: str | None, again: str, *, plan: bool = False) -> None:
        """adopt stopped by a signal: the report (each tenant adopted before it, the one in
        flight rolled back and the rest not-run), and on stderr what happened, the run that
        recorded the adoptions made, and the command that adopts the rest."""
        results = [r for r in stop.results or [] if isinstance(r, TenantResult)]
        report = CommandReport("adopt", results, run_id=run_id, plan=plan, interrupted=stop.signal_name)
        if results:
            self.results(report)
        elif self.as_json:  # stopped before any tenant was decided: the report all the same
            self.emit_json(report.as_dict())
        done = f"adoptions committed before it are recorded in run {run_id}" if run_id else "nothing was adopted"
        self._stopped(stop.signal_name, f"any adoption in flight was rolled back; {done}", again)

    def deprovision_stopped(self, stop: Interrupted) -> None:
        """deprovision stopped by a signal before its drop: the report (the tenant not-run, as it
        was), and on stderr what happened; nothing was dropped, so nothing needs finishing."""
        results = [r for r in stop.results or [] if isinstance(r, TenantResult)]
        report = CommandReport("deprovision", results, interrupted=stop.signal_name)
        if self.as_json:
            self.emit_json({**report.as_dict(), "restore": None})
        sys.stderr.write(f"interrupted by {stop.signal_name}: nothing was dropped and no backup kept; the tenant is as it was\n")

    def deprovision_failed(self, results: Sequence[TenantResult]) -> None:
        """deprovision failed (exit 1: the tenant does not exist, is in use, its backup cannot be
        written): with --json its one report, the tenant failed with the message; the error line
        itself goes to stderr (cli._guard). A refusal (exit 2) prints no JSON."""
        if self.as_json:
            self.emit_json({**CommandReport("deprovision", list(results)).as_dict(), "restore": None})

    def _stopped(self, signal_name: str, outcome: str, again: str) -> None:
        sys.stderr.write(f"interrupted by {signal_name}: {outcome}; to finish, run `{again}`\n")

    def late_signal(self, signum: int | None, when: str, run_id: str | None) -> None:
        """A signal that arrived once the command's work had committed (interrupts.py): it
        stopped nothing, and the exit code is the command's own."""
        if signum is None:
            return
        recorded = f" and recorded in run {run_id}" if run_id else ""
        sys.stderr.write(
            f"{signal.Signals(signum).name} arrived after {when}: it stopped nothing; "
            f"the work is complete{recorded}, and nothing needs to be run again\n"
        )

    def results(self, report: CommandReport) -> None:
        """A changing command's outcome (or plan): with --json one object (CommandReport), and
        the table of tenants and the counts as human text."""
        results = [r for r in report.tenants if isinstance(r, TenantResult)]
        verb = report.command
        for result in results:
            for warning in result.warnings:
                self.warn(f"{result.tenant_id}: {warning}")
        if self.as_json:
            self.emit_json(report.as_dict())
        if report.plan:
            self._plan(report, results)
            return
        counts = Counter(r.action.value for r in results)
        # A fleet at the target is one line, not a row per tenant; skipped rows show only with news.
        rows = [r for r in results if r.action != Action.SKIPPED or r.message != ALREADY_AT_TARGET]
        if rows:
            _table(
                [(r.tenant_id, r.namespace, r.action.value.upper() if r.failed else r.action.value, _detail(r)) for r in rows],
                self.human,
            )
            for r in rows:
                for line in r.details:
                    self.say(f"  {r.tenant_id}: {line}")
        if not results:
            self.say(f"nothing to {verb}: no tenants found")
        elif len(rows) == 0:
            self.say(f"nothing to {verb}: all {len(results)} tenant(s) already at the target revision")
        elif counts[Action.SKIPPED.value] == len(results):  # some left alone for a reason of their own
            at_target = len(results) - len(rows)
            also = f", {at_target} already at the target revision" if at_target else ""
            self.say(f"nothing done: {len(rows)} tenant(s) left alone (listed above){also}")
        else:
            self.say(", ".join(f"{n} {action}" for action, n in sorted(counts.items())))

    def _plan(self, report: CommandReport, results: list[TenantResult]) -> None:
        """--plan: every tenant, what would happen to it and in which wave; nothing was changed."""
        what = f" --resume {report.resumes}" if report.resumes else f" {report.undoes}" if report.undoes else ""
        target = f" to {report.target}" if report.target else ""
        self.say(f"plan: {report.command}{what}{target} (nothing has been changed)")
        waves = any(r.wave is not None for r in results)
        if results:
            header = ("TENANT", "NAMESPACE", "ACTION", *(("WAVE",) if waves else ()), "DETAIL")
            _table(
                [header]
                + [
                    (
                        r.tenant_id,
                        r.namespace,
                        r.action.value.upper() if r.failed else r.action.value,
                        *((str(r.wave or "-"),) if waves else ()),
                        _detail(r),
                    )
                    for r in results
                ],
                self.human,
            )
            for r in results:
                for line in r.details:
                    self.say(f"  {r.tenant_id}: {line}")
        counts = ", ".join(f"{n} {action}" for action, n in report.counts.items())
        self.say(f"{len(results)} tenant(s){': ' + counts if counts else ''}")


def _backends_covered(results: list[CheckResult]) -> list[str]:
    """The backends the database checks ran on, in the order they first appear."""
    kinds: list[str] = []
    for r in results:
        kinds += [k for k in r.backends if k not in kinds]
    return kinds


def _staging(staging: dict[str, object], resumes: str | None) -> str:
    """A staged run's canaries, waves and pause, as ``runs show`` says them (a resume that kept
    its run's groups has no spec of its own)."""
    canary, waves, pause = staging.get("canary"), staging.get("waves"), staging.get("pause")
    parts = [f"canaries {', '.join(map(str, canary))}"] if isinstance(canary, list) and canary else []
    parts += [f"waves {waves}"] if waves else [f"the groups of run {resumes} left"] if resumes else []
    seconds = float(pause) if isinstance(pause, (int, float)) else 0.0
    adopt = ["adopting each group's unversioned tenants first"] if staging.get("adopt") else []
    return ", ".join(parts + [f"{seconds:g} s between groups"] + adopt)


def _check_lines(results: list[CheckResult]) -> list[str]:
    lines = []
    for r in results:
        lines.append(f"{r.status.value.upper():7} {r.name}: {r.message}")
        lines += [f"          {line}" for line in r.evidence[:50]]
        if len(r.evidence) > 50:
            lines.append(f"          ... and {len(r.evidence) - 50} more")
    return lines


def _status_revision(r: TenantStatus) -> str:
    """A versioned tenant without a revision is at base; '-' is for no revision to show (missing,
    unversioned, unreadable)."""
    if r.revision is None and r.state in (State.CURRENT, State.BEHIND):
        return "base"
    return r.revision or "-"


def _drift_revision(r: TenantDrift) -> str:
    return "base" if r.revision is None and r.state in (OK, DRIFTED, REPAIRED, REPAIR_FAILED) else r.revision or "-"


def _unversioned(matches: str | None, nearest: str | None, adopt: str) -> str:
    if matches is None:
        return f"unversioned (matches no revision, nearest {nearest}; adopt: {adopt})"
    return f"unversioned (matches {matches}, adopt: {adopt})"


def _state(r: TenantStatus) -> str:
    if r.state == State.UNVERSIONED and r.adopt == "unknown":
        return f"unversioned ({r.error})"
    if r.state == State.UNVERSIONED and r.adopt:
        return _unversioned(r.matches, r.nearest, r.adopt)
    if r.error:
        return f"{r.state.value}: {r.error}"
    return r.state.value


def _detail(r: TenantResult) -> str:
    if r.incomplete:
        return f"at {r.to_revision or 'base'}: {r.message}"
    if r.action in (Action.ADOPTED, Action.WOULD_ADOPT):
        return r.message
    if r.action == Action.SKIPPED:
        return f"at {r.to_revision or 'base'} ({r.message})"
    if r.action == Action.SCRIPTED:
        return f"at {r.to_revision or 'base'}: {r.message}"
    return f"{r.from_revision or 'base'} -> {r.to_revision or 'base'}" + (f" ({r.message})" if r.message else "")


def _drift_label(row: TenantDrift) -> str:
    if row.state == UNVERSIONED:
        if row.adopt == UNKNOWN_ADOPTION:
            return f"unversioned ({row.error})"
        return _unversioned(row.matches, row.nearest, row.adopt) if row.adopt else "unversioned (empty)"
    if row.state == DRIFTED:
        return "DRIFTED" + (" (repairable: `verify --repair --yes`)" if row.repairable and not row.error else "")
    if row.failed:
        return f"{row.state.upper()}: {row.error}" if row.error else row.state.upper()
    if row.state == REPAIRED:
        return f"repaired: now exactly {row.revision}"
    return row.state


def _run_row(r: RunInfo) -> tuple[str, ...]:
    counts = ", ".join(f"{n} {action}" for action, n in r.counts.items())
    return (r.run_id, r.command, r.target or "-", r.started_at[:19], (r.finished_at or "-")[:19], r.state, counts)


def _reached(t: RunTenant) -> str:
    """Where the tenant went; a pending one (the run is live) is on its way to its target."""
    if t.pending:
        return f"pending -> {t.target or 'base'}"
    return t.to_revision or "base"

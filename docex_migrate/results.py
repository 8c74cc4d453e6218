"""What the commands return: values only, never the code that produces them.

Per tenant, a TenantResult (the action taken, the revisions, the error as a value): a failing
tenant is one with Action.FAILED, never an exception that stops the others. And the other
commands' answers: a check's CheckResult, verify's TenantDrift, the ledger's RunInfo, RunTenant
and RunDetail, deprovision's Deprovisioned, history's RevisionInfo. Reporting prints these;
it imports nothing that computes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from .errors import DocexMigrateError

ALREADY_AT_TARGET = "already at the target"
PENDING = "pending"  # a run's tenant whose result the ledger has not recorded (yet)


class Action(str, Enum):
    """What happened to a tenant; the value is what JSON and the summary show."""

    PROVISIONED = "provisioned"
    UPGRADED = "upgraded"
    DOWNGRADED = "downgraded"
    ADOPTED = "adopted"
    WOULD_ADOPT = "would-adopt"  # adopt --dry-run (--plan)
    WOULD_PROVISION = "would-provision"  # --plan: what provision would do
    WOULD_UPGRADE = "would-upgrade"  # --plan: what upgrade (or --resume, or undo) would do
    WOULD_DOWNGRADE = "would-downgrade"  # --plan: what downgrade (or --resume, or undo) would do
    SKIPPED = "skipped"
    SCRIPTED = "scripted"  # upgrade --sql: its script written for review, nothing run
    FAILED = "failed"
    NOT_RUN = "not-run"  # left alone because --fail-fast / --max-failures (or an interrupt) stopped the run
    NEEDS_ADOPT = "needs-adopt"  # an unversioned tenant with tables is never migrated blindly
    DRIFTED = "drifted"  # refused by upgrade --verify-first: its catalog is not exactly its revision
    DEPROVISIONED = "deprovisioned"  # the run ledger's record of a deprovision
    RESTORED = "restored"  # restore: a deprovisioned tenant brought back from its backup
    REPAIRED = "repaired"  # verify --repair: index drift undone (the run ledger's record)

    def __str__(self) -> str:
        return self.value


class CheckStatus(str, Enum):
    """How a `docex-migrate check` ended: failed means the chain is wrong (exit 1), error that the
    check could not run (exit 2)."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


FAILURES = frozenset({Action.FAILED, Action.DRIFTED})  # count towards --max-failures
INCOMPLETE = FAILURES | {Action.NOT_RUN, Action.NEEDS_ADOPT}


@dataclass
class TenantResult:
    tenant_id: str
    namespace: str
    action: Action
    from_revision: str | None = None
    to_revision: str | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # e.g. adopt's repairs, or the diff it refused
    # Not reported: the database itself refused (down, or no connection left), so the run hands
    # out no more tenants.
    stops_run: bool = field(default=False, repr=False)
    # Not reported either: seconds the tenant's migration took (the run ledger records it).
    duration: float | None = field(default=None, repr=False, compare=False)
    # Not reported either: which namespace it was (Backend.identity), for the run ledger.
    identity: str | None = field(default=None, repr=False, compare=False)
    wave: int | None = None  # --canary / --waves: the group it is in, from 1 (the canaries, when given, are 1)
    backup_path: str | None = None  # deprovision: the backup's absolute path (reported, as "backup", only when there is one)
    # Not reported either: a deprovision's backup for the run ledger, JSON {"path", "sha256"}.
    backup: str | None = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.action in FAILURES

    @property
    def incomplete(self) -> bool:
        """Failed, or never attempted because the run stopped early: either way, exit 1."""
        return self.action in INCOMPLETE

    def as_dict(self) -> dict[str, object]:
        row: dict[str, object] = {
            "tenant_id": self.tenant_id,
            "namespace": self.namespace,
            "action": self.action.value,
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
            "message": self.message,
            "warnings": self.warnings,
            "details": self.details,
            "wave": self.wave,
        }
        if self.backup_path is not None:
            row["backup"] = self.backup_path
        return row


# What a command that changes tenants reports (its --json): one object, whatever the command.
# The shape is documented by docs/schemas/command-report.schema.json; keep the two in step.
REPORT_FORMAT = 1


@dataclass
class CommandReport:
    """One changing command's outcome (or, with ``plan``, what it would do): the command, the
    run that recorded it (None: not recorded, e.g. a plan, nothing to do, or no ledger), the
    target revision ("base" for base; None when each tenant has its own, as for undo and
    adopt), the count per action or state, and the tenants: TenantResult's, or verify's
    TenantDrift's (``verify --repair``). ``interrupted`` names the signal that stopped it."""

    command: str
    tenants: Sequence[TenantResult | TenantDrift]
    run_id: str | None = None
    target: str | None = None
    plan: bool = False
    resumes: str | None = None
    undoes: str | None = None
    interrupted: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(t.action.value if isinstance(t, TenantResult) else t.state for t in self.tenants)
        return dict(sorted(found.items()))

    @property
    def ok(self) -> bool:
        """No tenant failed or was left undone (exit 0), or, for a plan, none would be."""
        return self.interrupted is None and not any(
            t.incomplete if isinstance(t, TenantResult) else t.failed for t in self.tenants
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "format": REPORT_FORMAT,
            "command": self.command,
            "plan": self.plan,
            "run_id": self.run_id,
            "target": self.target,
            "resumes": self.resumes,
            "undoes": self.undoes,
            "ok": self.ok,
            "interrupted": self.interrupted,
            "counts": self.counts,
            "tenants": [t.as_dict() for t in self.tenants],
        }


# What a blocked or slow migration reports, and what to do about it.
_HINTS = {
    "55P03": "an application holds a lock on the table: retry when it is idle, or raise --lock-timeout",
    "57014": "a statement ran longer than --statement-timeout",
    # SQLite, once the tenant's write lock is ours: the commit waited past --lock-timeout for
    # the application's readers (the wait for the lock itself is TenantBusyError's message).
    "database is locked": "an application is reading or writing the tenant's file: retry when it is idle, or raise --lock-timeout",
}


def describe_error(exc: BaseException) -> str:
    """One line for a failed tenant: the database's own message, without the SQL or a URL."""
    if isinstance(exc, DocexMigrateError):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        text = str(orig if orig is not None else exc)
    else:
        orig, text = None, f"{type(exc).__name__}: {exc}"
    line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    hint = _HINTS.get(getattr(orig, "sqlstate", None) or "") or _HINTS.get(line)
    return f"{line} ({hint})" if hint else line


@dataclass
class CheckResult:
    """How one `docex-migrate check` ended (checks.py)."""

    name: str
    statement: str
    status: CheckStatus
    message: str = ""
    evidence: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)  # a database check: the backends it ran on

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "statement": self.statement,
            "status": self.status.value,
            "message": self.message,
            "evidence": self.evidence,
            "backends": self.backends,
        }


# A verify verdict is a status state (states.State's values, spelled here as strings so that
# this module needs nothing above it) or one of the verdicts of drift.py.
AHEAD, BEHIND, CORRUPT, CURRENT = "ahead", "behind", "corrupt", "current"
UNREADABLE, UNVERSIONED = "unreadable", "unversioned"
OK, DRIFTED, REPAIRED = "ok", Action.DRIFTED.value, "repaired"
# verify --repair: drifted, its repair attempted and rolled back; counted as the ledger records it
REPAIR_FAILED = Action.FAILED.value
UNVERIFIED = "unverified"  # versioned, but its revision's snapshot is not available here
FAILED_STATES = (DRIFTED, REPAIR_FAILED, UNVERIFIED, UNREADABLE, CORRUPT, AHEAD)
MAX_DIFF = 20  # lines of diff shown per tenant; the JSON carries them all
UNKNOWN_ADOPTION = "unknown"  # adoption.Decision.UNKNOWN's value: recognition could not run


@dataclass
class TenantDrift:
    """One tenant's verdict: ok, drifted, repaired, failed (verify --repair: drifted, and its
    repair failed and was rolled back; ``error`` says why), or the state that kept it from being
    compared (unversioned, missing, unreadable, corrupt, ahead, unverified)."""

    tenant_id: str
    namespace: str
    revision: str | None
    state: str
    diff: list[str] = field(default_factory=list)  # what is missing, extra, different (drifted)
    repairs: list[str] = field(default_factory=list)  # what `verify --repair` does or did (index changes)
    matches: str | None = None  # unversioned: the revision adopt would stamp
    nearest: str | None = None  # unversioned, adopt refused: the revision it differs least from
    adopt: str | None = None  # unversioned: adopt, repair, refuse, unknown
    error: str | None = None
    fingerprint: str | None = None  # the catalog's group: tenants with one fingerprint have one catalog
    excused: list[str] = field(default_factory=list)  # differences declared deliberate (excuses.py), not drift

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def repairable(self) -> bool:
        return self.state == DRIFTED and bool(self.repairs)

    def as_dict(self) -> dict[str, object]:
        row: dict[str, object] = {
            "tenant_id": self.tenant_id,
            "namespace": self.namespace,
            "revision": self.revision,
            "state": self.state,
            "fingerprint": self.fingerprint[:16] if self.fingerprint else None,
        }
        if self.state in (DRIFTED, REPAIRED, REPAIR_FAILED):
            row.update(diff=self.diff, repairs=self.repairs, repairable=self.repairable or self.state != DRIFTED)
        if self.state == UNVERSIONED:
            row.update(matches=self.matches, adopt=self.adopt)
            if self.nearest is not None:
                row["nearest"] = self.nearest
        row["excused"] = self.excused
        if self.error:
            row["error"] = self.error
        return row


@dataclass(frozen=True)
class RunTenant:
    """A tenant of a recorded run, as the ledger has it (reconciled when the run died)."""

    tenant_id: str
    namespace: str
    action: str
    from_revision: str | None
    to_revision: str | None
    target: str | None
    finished_at: str | None
    duration_ms: int | None
    message: str
    identity: str | None = None  # which namespace it was (Backend.identity); None in older ledgers
    backup: str | None = None  # a deprovision's backup, JSON {"path", "sha256"}; None in older ledgers
    wave: int | None = None  # a staged rollout's group, from 1; None past the last wave, unstaged, or older ledgers

    @property
    def pending(self) -> bool:
        return self.action == PENDING

    def as_dict(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "namespace": self.namespace,
            "action": self.action,
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
            "target": self.target,
            "finished_at": self.finished_at,
            "duration_ms": self.duration_ms,
            "message": self.message,
        }


@dataclass(frozen=True)
class RunInfo:
    """A recorded run: who ran what, when, and how it ended."""

    run_id: str
    command: str
    target: str | None
    selection: str
    resumes: str | None
    undoes: str | None
    user: str
    host: str
    pid: int
    version: str
    chain_head: str | None
    started_at: str
    finished_at: str | None
    state: str
    error: str | None
    counts: dict[str, int]
    # what --resume keeps: a staged rollout's {"canary", "waves", "pause"}, and "adopt" for --adopt (staged or not)
    staging: dict[str, object] | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "target": self.target,
            "selection": self.selection,
            "resumes": self.resumes,
            "undoes": self.undoes,
            "user": self.user,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "chain_head": self.chain_head,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "state": self.state,
            "error": self.error,
            "counts": self.counts,
            "staging": self.staging,
        }


@dataclass(frozen=True)
class RunDetail:
    run: RunInfo
    tenants: list[RunTenant]

    def as_dict(self) -> dict[str, object]:
        return {**self.run.as_dict(), "tenants": [t.as_dict() for t in self.tenants]}


@dataclass(frozen=True)
class Deprovisioned:
    tenant_id: str
    namespace: str
    backup: Path | None
    warnings: tuple[str, ...] = ()  # what was neither backed up nor removed (PostgreSQL's large objects)
    from_revision: str | None = None  # where the tenant was when it was dropped
    restore: str | None = None  # the command that brings the tenant back from the backup

    def as_result(self) -> TenantResult:
        """The tenant's line in the command's report (and the ledger's row)."""
        backup = str(self.backup) if self.backup else None
        message = f"backup in {backup}" if backup else "no backup written"
        return TenantResult(
            self.tenant_id,
            self.namespace,
            Action.DEPROVISIONED,
            self.from_revision,
            None,
            message,
            warnings=list(self.warnings),
            backup_path=backup,
        )

    def as_dict(self) -> dict[str, object]:
        backup = str(self.backup) if self.backup else None
        return {
            "tenant_id": self.tenant_id,
            "namespace": self.namespace,
            "backup": backup,
            "warnings": list(self.warnings),
            "restore": self.restore,
        }


@dataclass(frozen=True)
class Restored:
    """A tenant brought back from a deprovision's backup (restore), as recorded in run ``run_id``."""

    result: TenantResult
    backup: Path
    deprovisioned_by: str  # the deprovision run that wrote the backup
    head: str  # the chain's head: a tenant restored below it is behind
    run_id: str | None  # None: the ledger could not record the restore
    upgrade: str = ""  # the command that brings the tenant to the head
    show: str = ""  # the command that shows the restore's run
    newer: tuple[tuple[str, str], ...] = ()  # the tenant's backups deprovisions wrote since (path, run), newest first

    @property
    def behind(self) -> bool:
        return self.result.to_revision != self.head

    def as_dict(self) -> dict[str, object]:
        """The shape of every changing command's JSON (docs/schemas/command-report.schema.json,
        format 1: the run, the command, its target, counts per action, the tenants); and where
        the tenant came from, whether it is behind the head, and the tenant's newer backups."""
        result = replace(self.result, backup_path=str(self.backup))
        report = CommandReport("restore", [result], run_id=self.run_id, target=self.result.to_revision)
        return {
            **report.as_dict(),
            "backup": str(self.backup),
            "deprovisioned_by": self.deprovisioned_by,
            "behind_head": self.behind,
            "newer_backups": [{"backup": path, "deprovisioned_by": run} for path, run in self.newer],
        }


@dataclass(frozen=True)
class RevisionInfo:
    revision: str
    down_revision: str | None
    doc: str
    head: bool

    def as_dict(self) -> dict[str, object]:
        return {"revision": self.revision, "down_revision": self.down_revision, "doc": self.doc, "head": self.head}

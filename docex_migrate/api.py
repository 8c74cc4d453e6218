"""The Python API: what the CLI commands do, callable from applications and tests.

Every function takes the Settings first (as Alembic's commands take their Config), refuses bad
input before touching any namespace, and returns one result per tenant: a failing tenant is a
value in the list, never an exception that stops the others. Each command is one short
function here; the work lives in the modules it names (states, adoption, provisioning,
executors, runner).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .adoption import Decision, adopt, with_recognition
from .backends import open_backend
from .chain import Chain, load_chain, writable_location
from .config import Settings
from .drift import hold_back_drifted
from .errors import Interrupted, TenantNotFoundError, UsageError
from .executors import WorkItem, collect, execute, in_order, not_run, stopped_after
from .provisioning import ensure_tenant, provision, verify_tenant
from .results import Action, TenantResult
from .rollout import groups, parse_waves
from .runner import author_revision
from .runs import Run, RunDetail, RunInfo, list_runs, recording, resume_plan, show_run, undo_plan
from .scratch import scratch_settings
from .selection import in_shard, select, validated
from .states import State, TenantStatus, plan, state_of

__all__ = [
    "Decision",
    "Deprovisioned",
    "RevisionInfo",
    "Run",
    "RunDetail",
    "RunInfo",
    "State",
    "TenantResult",
    "TenantStatus",
    "adopt",
    "check_tenant_ids",
    "deprovision",
    "downgrade",
    "ensure_tenant",
    "heads",
    "history",
    "in_shard",
    "list_tenants",
    "new_revision",
    "provision",
    "runs",
    "resume_plan",
    "show_run",
    "status",
    "undo",
    "undo_plan",
    "upgrade",
    "verify_tenant",
]


def check_tenant_ids(settings: Settings, tenant_ids: Sequence[str]) -> dict[str, str]:
    """tenant id -> namespace, or InvalidTenantError for the first id that is refused."""
    with open_backend(settings) as backend:
        return validated(backend, tenant_ids)


def status(
    settings: Settings,
    tenant_ids: Sequence[str] | None = None,
    *,
    shard: tuple[int, int] | None = None,
    chain: Chain | None = None,
) -> list[TenantStatus]:
    """Every tenant's revision and state, read in bulk without Alembic; creates nothing."""
    chain = chain or load_chain()
    with open_backend(settings) as backend:
        namespaces = in_shard(select(backend, tenant_ids or None), shard)
        states = backend.read_states(namespaces)
        rows = []
        for tenant_id, namespace in namespaces.items():
            revision, state = state_of(chain, states[tenant_id])
            row = TenantStatus(tenant_id, namespace, revision, state, error=states[tenant_id].error)
            if state == State.UNVERSIONED and states[tenant_id].table_count:
                row = with_recognition(settings, backend, chain, row)
            rows.append(row)
        return rows


def list_tenants(settings: Settings) -> dict[str, str]:
    """The tenants found in the database: tenant id -> namespace, from the namespaces alone.

    Cheap and read-only: no tenant is opened, so a corrupt or unreadable one is still listed
    (``status`` says what is wrong with it)."""
    with open_backend(settings) as backend:
        return select(backend, None)


def upgrade(
    settings: Settings,
    tenant_ids: Sequence[str] | None = None,
    revision: str = "head",
    *,
    max_failures: int | None = None,
    adopt_first: bool = False,
    verify_first: bool = False,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    chain: Chain | None = None,
    run: Run | None = None,
    resume: str | None = None,
    canary: Sequence[str] = (),
    waves: str | None = None,
    pause_between_waves: float = 0.0,
) -> list[TenantResult]:
    """Bring tenants (None = every tenant found) to ``revision``; tenants already there are skipped.

    A failing tenant does not stop the others unless ``max_failures`` is reached (1 = fail fast);
    the tenants after that are reported as not run. ``adopt_first`` adopts unversioned tenants
    (created by DocEX itself) first, then upgrades them with the rest. ``verify_first`` leaves
    alone, as drifted, every tenant whose catalog is not exactly its revision (see drift.py).

    ``run`` records the run in the ledger as it happens (runs.py). ``resume`` names a recorded
    run: its tenants that did not reach its target go there, as a new recorded run (the
    tenants and revision given are then ignored; [] when none is left). A provision's are
    provisioned (``provision(..., exist_ok=True)``): some may never have been created.

    ``canary`` tenants go first, then ``waves`` (see rollout.py); the run stops after the first
    group with a failure (or at ``max_failures``), the tenants not reached are not run, and
    ``pause_between_waves`` seconds pass between groups."""
    chain = chain or load_chain()
    if resume is not None:
        tenant_ids, revision, run, resumed = _resuming(settings, resume, "upgrade", chain, run)
        if not tenant_ids:
            return []
        if resumed == "provision":  # recorded as one, so that it is resumed the same way in turn
            run.command = "provision"
            return provision(settings, tenant_ids, exist_ok=True, jobs=jobs, chain=chain, run=run)
    target = chain.resolve(revision)
    staged = _staged(settings, tenant_ids, shard, canary, waves) if canary or waves is not None else None
    with recording(run, chain) as done:
        adopted = _adopt_unversioned(settings, tenant_ids, shard, chain) if adopt_first else {}
        failed_adoptions = sum(r.failed for r in adopted.values())
        if staged is None:
            results = _migrate(
                settings,
                tenant_ids,
                target,
                downgrade=False,
                max_failures=max_failures,
                jobs=jobs,
                shard=shard,
                chain=chain,
                failures_so_far=failed_adoptions,
                verify_first=verify_first,
                run=run,
            )
        else:
            results = _in_waves(
                settings, staged, target, max_failures, jobs, chain, failed_adoptions, verify_first, run, pause_between_waves
            )
        return done([_after_adoption(adopted.get(r.tenant_id), r) for r in results])


def _staged(
    settings: Settings, tenant_ids: Sequence[str] | None, shard: tuple[int, int] | None, canary: Sequence[str], waves: str | None
) -> tuple[dict[str, str], list[list[str]], list[str]]:
    """The selected tenants, the groups to run in order, and the tenants no wave reaches;
    bad specs and canaries are refused before anything runs."""
    sizes = parse_waves(waves) if waves is not None else []
    with open_backend(settings) as backend:
        validated(backend, canary)
        namespaces = in_shard(select(backend, tenant_ids), shard)
    planned, beyond = groups(list(namespaces), list(canary), sizes)
    return namespaces, planned, beyond


def _in_waves(
    settings: Settings,
    staged: tuple[dict[str, str], list[list[str]], list[str]],
    target: str | None,
    max_failures: int | None,
    jobs: int,
    chain: Chain,
    failures: int,
    verify_first: bool,
    run: Run | None,
    pause: float,
) -> list[TenantResult]:
    """Each group through the ordinary migration, one after the other; stop after the first
    group with a failure. The rest are reported not run, at the revision they have. Every
    tenant is in the run's ledger from the start, so a signal between or during waves leaves
    the later ones for ``--resume``, and the Interrupted carries every tenant's result."""
    namespaces, planned, beyond = staged
    with open_backend(settings) as backend:
        states = backend.read_states(namespaces)
    before = {t: state_of(chain, states[t])[0] for t in namespaces}
    if run is not None:
        run.reserve(target, {t: (namespaces[t], before[t]) for t in namespaces})
    finished: dict[str, TenantResult] = {}
    try:
        for number, group in enumerate(planned):
            if number and pause > 0:
                time.sleep(pause)
            budget = None if max_failures is None else max_failures - failures
            got = _migrate(
                settings,
                group,
                target,
                downgrade=False,
                max_failures=budget,
                jobs=jobs,
                shard=None,
                chain=chain,
                verify_first=verify_first,
                run=run,
            )
            finished.update((r.tenant_id, r) for r in got)
            failures += sum(r.failed for r in got)
            if any(r.failed for r in got) or (max_failures is not None and failures >= max_failures):
                what = f"group {number + 1} of {len(planned)}"  # the canaries, when given, are group 1
                left = [t for later in planned[number + 1 :] for t in later] + beyond
                finished.update(_not_reached(settings, chain, left, f"the rollout stopped after {what} failed"))
                break
        else:
            finished.update(_not_reached(settings, chain, beyond, "beyond the last wave (--resume continues)"))
    except Interrupted as stop:
        finished.update((r.tenant_id, r) for r in stop.results or [])
        left = [t for t in namespaces if t not in finished]
        finished.update(_not_reached(settings, chain, left, f"interrupted by {stop.signal_name} (--resume continues)"))
        for t in left:  # the signal came after its commit, before its wave returned
            if finished[t].to_revision == target != before[t]:
                finished[t] = TenantResult(
                    t, namespaces[t], Action.UPGRADED, before[t], target, f"committed just before {stop.signal_name}"
                )
        stop.results = [finished[t] for t in namespaces if t in finished]
        raise
    return [finished[t] for t in namespaces if t in finished]


def _not_reached(settings: Settings, chain: Chain, tenant_ids: list[str], why: str) -> dict[str, TenantResult]:
    """Not-run results for tenants a stopped run never reached, at the revision each has now
    (one backend, one bulk read for all of them)."""
    if not tenant_ids:
        return {}
    with open_backend(settings) as backend:
        namespaces = validated(backend, tenant_ids)
        states = backend.read_states(tenant_ids)
    results = {}
    for tenant_id in tenant_ids:
        revision = state_of(chain, states[tenant_id])[0]
        results[tenant_id] = TenantResult(
            tenant_id, namespaces[tenant_id], Action.NOT_RUN, revision, revision, f"not attempted: {why}"
        )
    return results


def downgrade(
    settings: Settings,
    tenant_ids: Sequence[str] | None,
    revision: str,
    *,
    max_failures: int | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    chain: Chain | None = None,
    run: Run | None = None,
    resume: str | None = None,
) -> list[TenantResult]:
    """Take tenants back to ``revision`` ('base' removes every table). ``run`` and ``resume``
    as for upgrade."""
    chain = chain or load_chain()
    if resume is not None:
        tenant_ids, revision, run, _ = _resuming(settings, resume, "downgrade", chain, run)
        if not tenant_ids:
            return []
    target = chain.resolve(revision)
    with recording(run, chain) as done:
        return done(
            _migrate(
                settings,
                tenant_ids,
                target,
                downgrade=True,
                max_failures=max_failures,
                jobs=jobs,
                shard=shard,
                chain=chain,
                run=run,
            )
        )


def undo(
    settings: Settings, run_id: str, *, jobs: int = 1, chain: Chain | None = None, run: Run | None = None
) -> list[TenantResult]:
    """Take every tenant that run ``run_id`` moved back to the revision it had before, as a new
    recorded run. A tenant that has moved since (another run touched it) is left alone and
    listed (skipped). UsageError (exit 2) for an unknown run, one still running, or a deprovision."""
    chain = chain or load_chain()
    plan = undo_plan(settings, run_id, chain)
    run = run or Run(settings, "undo")
    run.undoes, run.selection = run_id, f"undo {run_id}"
    results = list(plan.left_alone)
    with recording(run, chain) as done:
        for (target, downgrade), tenants in plan.groups.items():
            try:
                results += _migrate(
                    settings,
                    tenants,
                    target,
                    downgrade=downgrade,
                    max_failures=None,
                    jobs=jobs,
                    shard=None,
                    chain=chain,
                    run=run,
                    expected=plan.left_at,
                )
            except Interrupted as stop:
                done_ids = {r.tenant_id for r in results + (stop.results or [])}
                left = [t for group in plan.groups.values() for t in group if t not in done_ids]
                stop.results = results + (stop.results or []) + list(_not_reached(settings, chain, left, "interrupted").values())
                raise
        return done(sorted(results, key=lambda r: r.tenant_id))


def runs(settings: Settings, *, limit: int = 20, chain: Chain | None = None) -> list[RunInfo]:
    """The most recent recorded runs of this database, newest first (reconciled; read-only)."""
    return list_runs(settings, limit=limit, chain=chain)


def _resuming(settings: Settings, resume: str, command: str, chain: Chain, run: Run | None) -> tuple[list[str], str, Run, str]:
    """What ``--resume RUN`` takes on: RUN's tenants that did not reach its target, that target,
    the new run that records it, naming RUN, and RUN's command."""
    tenant_ids, revision, resumed = resume_plan(settings, resume, command, chain)
    run = run or Run(settings, command)
    run.resumes, run.selection = resume, f"--resume {resume}"
    return tenant_ids, revision, run, resumed


def _adopt_unversioned(
    settings: Settings, tenant_ids: Sequence[str] | None, shard: tuple[int, int] | None, chain: Chain
) -> dict[str, TenantResult]:
    """adopt, for the selected tenants that DocEX created itself (unversioned, with tables)."""
    with open_backend(settings) as backend:
        namespaces = in_shard(select(backend, tenant_ids), shard)
        states = backend.read_states(namespaces)
    unversioned = [t for t in namespaces if state_of(chain, states[t])[1] == State.UNVERSIONED and states[t].table_count]
    return {r.tenant_id: r for r in adopt(settings, unversioned, chain=chain)} if unversioned else {}


def _after_adoption(adopted: TenantResult | None, result: TenantResult) -> TenantResult:
    """One line per tenant: a failed adoption is the tenant's result; a successful one is
    told in front of what the upgrade then did."""
    if adopted is None:
        return result
    if adopted.failed:
        return adopted
    result.message = "; ".join(m for m in (adopted.message, result.message) if m)
    result.details = adopted.details + result.details
    return result


def _migrate(
    settings: Settings,
    tenant_ids: Sequence[str] | None,
    target: str | None,
    *,
    downgrade: bool,
    max_failures: int | None,
    jobs: int,
    shard: tuple[int, int] | None,
    chain: Chain,
    failures_so_far: int = 0,
    verify_first: bool = False,
    run: Run | None = None,
    expected: Mapping[str, tuple[str, str | None]] | None = None,
) -> list[TenantResult]:
    """Plan every selected tenant from one bulk read, then hand those that need Alembic to the
    executor. Refusals count towards ``max_failures`` like failures do. ``expected`` (undo):
    tenant -> the revision (or BASE) it must still be at when its lock is taken, and the
    identity of the namespace it must still be (None: not recorded, not checked)."""
    if max_failures is not None and max_failures < 1:
        raise UsageError(f"--max-failures must be at least 1, not {max_failures}")
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}")
    with open_backend(settings) as backend:
        namespaces = in_shard(select(backend, tenant_ids), shard)
        states = backend.read_states(namespaces)
        finished: dict[str, TenantResult] = {}
        work: list[WorkItem] = []
        for tenant_id, namespace in namespaces.items():
            state = states[tenant_id]
            planned = plan(chain, tenant_id, namespace, state, target, downgrade=downgrade)
            if planned is not None:
                finished[tenant_id] = planned
            else:
                revision = state_of(chain, state)[0]
                expect, identity = expected[tenant_id] if expected else (None, state.identity)
                work.append(
                    WorkItem(
                        tenant_id,
                        namespace,
                        revision,
                        target,
                        downgrade,
                        versioned=state.versioned,
                        expect=expect,
                        identity=identity,
                    )
                )
        if verify_first:  # a tenant not proven exactly its revision is left alone, as a failure
            work = hold_back_drifted(settings, backend, chain, work, finished)
        if run is not None:
            run.planned(target, namespaces, finished, work, chain)
        failures = failures_so_far + sum(r.failed for r in finished.values())
        budget = None if max_failures is None else max_failures - failures
        interrupted = None
        if budget is not None and budget <= 0:
            finished.update((i.tenant_id, not_run(i, stopped_after(failures))) for i in work)
        else:
            on_result, on_start = (run.on_result, run.on_start) if run is not None else (None, None)
            interrupted = collect(
                finished,
                lambda: execute(
                    settings, backend, work, jobs=jobs, max_failures=budget, on_result=on_result, on_start=on_start, chain=chain
                ),
            )
        return in_order(finished, namespaces, interrupted)


@dataclass(frozen=True)
class Deprovisioned:
    tenant_id: str
    namespace: str
    backup: Path | None
    warnings: tuple[str, ...] = ()  # what was neither backed up nor removed (PostgreSQL's large objects)

    def as_dict(self) -> dict[str, object]:
        backup = str(self.backup) if self.backup else None
        return {"tenant_id": self.tenant_id, "namespace": self.namespace, "backup": backup, "warnings": list(self.warnings)}


def deprovision(settings: Settings, tenant_id: str, *, backup_dir: Path | None = Path("backups")) -> Deprovisioned:
    """Drop a tenant's schema or delete its file, after writing a backup into ``backup_dir``
    (None: no backup). The directory of a SQLite tenant goes too, but only if it is then empty.

    Backup and drop happen under one lock, and the backup is checked to hold exactly what is
    dropped. DeprovisionRefusedError (exit 1), with nothing dropped and no backup kept, when the
    tenant stays in use past the lock timeout (SQLite: another connection has its file open),
    objects outside it depend on it (PostgreSQL), or the backup cannot be written or verified.
    ``warnings`` name what is neither backed up nor removed (PostgreSQL's large objects)."""
    with open_backend(settings) as backend:
        namespace = backend.namespace(tenant_id)
        if not backend.read_states([tenant_id])[tenant_id].exists:
            raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist (no {namespace})")
        kept = tuple(backend.kept_by_deprovision(tenant_id))
        return Deprovisioned(tenant_id, namespace, backend.deprovision(tenant_id, backup_dir), kept)


def new_revision(settings: Settings, message: str, *, autogenerate: bool = False) -> Path | None:
    """Add a revision on top of the chain in the source checkout (alembic/versions/).

    ``autogenerate`` compares a scratch tenant at head (on the configured backend, removed
    afterwards) with docex_migrate/schema.py; None means it found nothing, and wrote nothing."""
    writable_location()
    if not message.strip():
        raise UsageError("give the revision a message: -m 'what it changes'")
    chain = load_chain()
    if not autogenerate:
        return author_revision(None, "", message, chain.head)
    with scratch_settings(settings, committed=True) as scratch, open_backend(scratch) as backend:
        return author_revision(backend, "autogenerate", message, chain.head)


@dataclass(frozen=True)
class RevisionInfo:
    revision: str
    down_revision: str | None
    doc: str
    head: bool

    def as_dict(self) -> dict[str, object]:
        return {"revision": self.revision, "down_revision": self.down_revision, "doc": self.doc, "head": self.head}


def history(chain: Chain | None = None) -> list[RevisionInfo]:
    """The revision chain, newest first."""
    chain = chain or load_chain()
    revisions = [chain.script.get_revision(r) for r in reversed(chain.order)]
    return [
        RevisionInfo(r.revision, r.down_revision, r.doc, r.revision == chain.head)  # type: ignore[arg-type]
        for r in revisions
        if r is not None
    ]


def heads(chain: Chain | None = None) -> list[str]:
    """The chain's head revisions (one, when the history is linear)."""
    return list((chain or load_chain()).script.get_heads())


# Action is part of the API's vocabulary (results' ``action``), re-exported for callers.
_ = Action

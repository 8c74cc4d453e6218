"""The Python API, and the only command layer: one function per CLI command, callable from
applications and tests; cli.py only parses, calls one of these, and hands the result to
reporting.py.

Every function takes the Settings first (as Alembic's commands take their Config), refuses bad
input before touching any namespace, and returns values: one result per tenant, a failing
tenant a value in the list, never an exception that stops the others. Each command builds its
invocation once (invocation.py: the chain loaded and the backend opened in one place), records
its run in the ledger itself (run_record.py), and leaves the work to the modules it names
(migration, provisioning, adoption, drift, checks, review, run_history).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import drift, interrupts, migration, provisioning, restoration
from .adoption import Decision, statuses
from .adoption import adopt as adopt_tenants
from .advice import command
from .backends import open_backend
from .chain import Chain, load_chain, script_location, writable_location
from .checkout import tenant_metadata
from .config import Settings, load_settings
from .errors import EXIT_FAILED, DocexMigrateError, Interrupted, TenantNotFoundError, TenantNotReadyError, UsageError
from .first_access import ReadyTenants, at_head
from .invocation import Invocation, invoked
from .provisioning import verify_tenant
from .restore_advice import backup_record, restore_command
from .results import (
    Action,
    CheckResult,
    CommandReport,
    Deprovisioned,
    Restored,
    RevisionInfo,
    RunDetail,
    RunInfo,
    TenantDrift,
    TenantResult,
)
from .run_history import Resumption, list_runs, resume_plan, resumption, show_run, undo_plan
from .run_record import Run, recording, target_name, tool_version
from .runner import author_revision
from .schema import metadata as docex_metadata
from .scratch import scratch_settings
from .selection import in_shard, select, validated
from .states import State, TenantStatus, state_of

if TYPE_CHECKING:
    from .review import Review

log = logging.getLogger(__name__)

__all__ = [
    "CheckResult",
    "CommandReport",
    "Decision",
    "Deprovisioned",
    "Restored",
    "RevisionInfo",
    "Run",
    "RunDetail",
    "ReadyTenants",
    "RunInfo",
    "State",
    "TenantResult",
    "TenantStatus",
    "TenantDrift",
    "adopt",
    "check",
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
    "restore",
    "runs",
    "resume_plan",
    "show_run",
    "status",
    "target_of",
    "undo",
    "undo_plan",
    "update_manifest",
    "upgrade",
    "upgrade_sql",
    "verify",
    "verify_tenant",
    "version",
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
    with invoked(settings, chain=chain, shard=shard) as inv:
        return statuses(inv, tenant_ids)


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
    pause_between_waves: float | None = None,
    plan: bool = False,
) -> list[TenantResult]:
    """Bring tenants (None = every tenant found) to ``revision``; tenants already there are skipped.

    A failing tenant does not stop the others unless ``max_failures`` is reached (1 = fail fast);
    the tenants after that are reported as not run. ``adopt_first`` adopts unversioned tenants
    (created by DocEX itself) first, then upgrades them with the rest. ``verify_first`` leaves
    alone, as drifted, every tenant whose catalog is not exactly its revision (see drift.py).

    ``run`` records the run in the ledger as it happens (run_record.py). ``resume`` names a recorded
    run: its tenants that did not reach its target go there, as a new recorded run (the
    tenants and revision given are then ignored; [] when none is left). A provision's are
    provisioned (``provision(..., exist_ok=True)``): some may never have been created. An
    upgrade's tenant deprovisioned since the run, and not there now, is skipped (naming the
    deprovision and the restore that brings it back), never a failure. A run that adopted
    (``adopt_first``, recorded in its staging) is resumed adopting too, except in a ``plan``.

    ``canary`` tenants go first, then ``waves`` (see rollout.py); the run stops after the first
    group with a failure (or at ``max_failures``), the tenants not reached are not run, and
    ``pause_between_waves`` seconds pass between groups that have something to do. With
    ``adopt_first`` each group's unversioned tenants are adopted when the group is reached.
    A ``resume`` of a staged run keeps its staging: the tenants left, in the groups the run put
    them in (those with none left dropped; the tenants past its last wave one group after them),
    with its pause; ``canary`` or ``waves`` given instead stage the tenants left anew, and a
    ``pause_between_waves`` given replaces the run's.

    ``plan`` (--plan): the same decisions, reported as what would be done (``would-upgrade``,
    with each tenant's wave), and nothing is changed or recorded (``run`` is not used)."""
    if plan and adopt_first:
        raise UsageError("--plan cannot foresee what --adopt finds: plan the adoption with `adopt --plan`, then upgrade")
    with invoked(settings, chain=chain, run=run, max_failures=max_failures, jobs=jobs, shard=shard, plan_only=plan) as inv:
        resumed: Resumption | None = None
        gone: list[TenantResult] = []
        if resume is not None:
            resumed = _resuming(inv, resume, "upgrade")
            tenant_ids, revision = resumed.tenant_ids, resumed.target
            gone = migration.deprovisioned_since(inv, resume, resumed)
            tenant_ids = [t for t in tenant_ids if t not in {r.tenant_id for r in gone}]
            if not tenant_ids and not gone:
                return []
            # the run's --adopt is kept (a plan cannot adopt: it reports them needs-adopt)
            adopt_first = adopt_first or (not plan and bool((resumed.staging or {}).get("adopt")))
            if resumed.command == "provision":  # recorded as one, so that it is resumed the same way in turn
                if inv.run is not None:
                    inv.run.command = "provision"
                inv.max_failures = None  # as provision(..., exist_ok=True)
                return _recorded(inv, lambda inv: provisioning.provision(inv, tenant_ids, exist_ok=True))
        target = inv.chain.resolve(revision)
        return _recorded(
            inv,
            lambda inv: (
                gone
                + (
                    migration.upgrade(
                        inv,
                        tenant_ids,
                        target,
                        adopt_first=adopt_first,
                        verify_first=verify_first,
                        canary=canary,
                        waves=waves,
                        pause=pause_between_waves,
                        resumed=resumed,
                    )
                    if tenant_ids is None or tenant_ids
                    else []  # every tenant left was deprovisioned since
                )
            ),
        )


def _recorded(inv: Invocation, command: Callable[[Invocation], list[TenantResult]]) -> list[TenantResult]:
    """The command's results, its run (if any) ended in the ledger as finished, interrupted
    (with the results the Interrupted carries) or failed."""
    with recording(inv.run, inv.chain) as done:
        return done(command(inv))


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
    plan: bool = False,
) -> list[TenantResult]:
    """Take tenants back to ``revision`` ('base' removes every table). ``run``, ``resume`` and
    ``plan`` as for upgrade."""
    with invoked(settings, chain=chain, run=run, max_failures=max_failures, jobs=jobs, shard=shard, plan_only=plan) as inv:
        if resume is not None:
            resumed = _resuming(inv, resume, "downgrade")
            tenant_ids, revision = resumed.tenant_ids, resumed.target
            if not tenant_ids:
                return []
        target = inv.chain.resolve(revision)
        return _recorded(inv, lambda inv: migration.migrate(inv, migration.selected(inv, tenant_ids), target, downgrade=True))


def target_of(settings: Settings, command: str, revision: str, *, resume: str | None = None, chain: Chain | None = None) -> str:
    """The revision ``upgrade``/``downgrade`` (``command``) goes to, resolved as the command
    resolves it ("base" for base): with ``resume``, the resumed run's target. What a command's
    report names as its target. UsageError for an unknown revision or a run that cannot be resumed."""
    chain = chain or load_chain()
    if resume is not None:
        return resume_plan(settings, resume, command, chain)[1]
    return target_name(chain.resolve(revision))


def undo(
    settings: Settings,
    run_id: str,
    *,
    jobs: int = 1,
    chain: Chain | None = None,
    run: Run | None = None,
    plan: bool = False,
) -> list[TenantResult]:
    """Take every tenant that run ``run_id`` moved back to the revision it had before, as a new
    recorded run. A tenant that has moved since (another run touched it) is left alone and
    listed (skipped). UsageError (exit 2) for an unknown run, one still running, one another
    live run resumes or undoes, or a deprovision. ``plan`` as for upgrade (warns of such a run)."""
    with invoked(settings, chain=chain, run=run, jobs=jobs, plan_only=plan) as inv:
        undoing = undo_plan(settings, run_id, inv.chain, plan_only=plan)
        if not plan:
            inv.run = inv.run or Run(settings, "undo")
            inv.run.undoes, inv.run.selection = run_id, f"undo {run_id}"
        return _recorded(inv, lambda inv: migration.undo(inv, undoing))


def runs(settings: Settings, *, limit: int = 20, chain: Chain | None = None) -> list[RunInfo]:
    """The most recent recorded runs of this database, newest first (reconciled; read-only)."""
    return list_runs(settings, limit=limit, chain=chain)


def _resuming(inv: Invocation, resume: str, command: str) -> Resumption:
    """What ``--resume RUN`` takes on: RUN's tenants that did not reach its target, that target,
    RUN's command and staging; the invocation's run (a new one unless given) records it, naming RUN."""
    resumed = resumption(inv.settings, resume, command, inv.chain, busy="warn" if inv.plan_only else "refuse")
    if not inv.plan_only:
        inv.run = inv.run or Run(inv.settings, command)
        inv.run.resumes, inv.run.selection = resume, f"--resume {resume}"
    return resumed


def provision(
    settings: Settings,
    tenant_ids: Sequence[str],
    *,
    verify: bool = False,
    exist_ok: bool = False,
    jobs: int = 1,
    replay: bool = True,
    chain: Chain | None = None,
    run: Run | None = None,
    plan: bool = False,
) -> list[TenantResult]:
    """Create each tenant's namespace and upgrade it to head, in one transaction per tenant.

    An existing tenant is a failure ("already exists") unless ``exist_ok``, when it is brought
    to head instead. ``verify`` then proves each tenant works and leaves no trace. ``replay``:
    fresh tenants get what the chain produced (fresh.py). ``run`` records the run in the ledger
    as it happens (run_record.py). ``plan`` as for upgrade (``would-provision``)."""
    with invoked(settings, chain=chain, run=run, jobs=jobs, plan_only=plan) as inv:
        return _recorded(
            inv, lambda inv: provisioning.provision(inv, tenant_ids, verify=verify, exist_ok=exist_ok, replay=replay)
        )


def ensure_tenant(tenant_id: str, settings: Settings | None = None, *, cache: ReadyTenants | None = None) -> TenantResult:
    """Provision ``tenant_id`` on first access, or bring it to head; idempotent. Records nothing
    (first-access provisioning is not a fleet run).

    Cheap enough to call on every request (first_access.py): a tenant already at head costs one
    read of its version rows, and with ``cache`` (a ReadyTenants kept by the application for the
    process) nothing at all once it has been found there, until the chain changes. Any other
    tenant takes the full path, ``provision(..., exist_ok=True)``.

    Raises TenantNotReadyError (exit 1) if the tenant cannot be made ready.
    """
    settings = settings or load_settings()
    chain = load_chain()
    result = cache.get(settings, chain, tenant_id) if cache is not None else None
    if result is None:
        with open_backend(settings) as backend:
            result = at_head(settings, backend, chain, tenant_id)
        if result is None:
            (result,) = provision(settings, [tenant_id], exist_ok=True, chain=chain)
    if result.failed:
        raise TenantNotReadyError(f"tenant {tenant_id!r}: {result.message}")
    if cache is not None:
        cache.add(settings, chain, result)
    return result


def adopt(
    settings: Settings,
    tenant_ids: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    chain: Chain | None = None,
    run: Run | None = None,
    on_result: Callable[[TenantResult], None] | None = None,
) -> list[TenantResult]:
    """Stamp tenants that DocEX created itself at the revision they are (see adoption.py); a
    known index hybrid is repaired first, anything else refused with a diff, untouched.
    ``dry_run`` decides and reports, changing nothing. ``run`` records the run in the ledger
    as each result is decided (it enters the ledger with its first change, as upgrade's does
    with its first plan that has work).

    A signal (the command line's Interrupted) stops it: the tenant in flight rolls back, the run
    is ended as interrupted (the tenants adopted before it stay recorded), and the Interrupted
    carries every tenant's result, those not adopted not-run. A signal after the last stamp
    committed stops nothing (interrupts.py)."""
    with invoked(settings, chain=chain, run=run) as inv:
        if inv.run is None:
            return adopt_tenants(inv, tenant_ids, dry_run=dry_run, on_result=on_result)
        record = inv.run.as_it_comes(inv.chain)

        def recorded(result: TenantResult) -> None:
            record(result)
            if on_result is not None:
                on_result(result)

        return _recorded(inv, lambda inv: adopt_tenants(inv, tenant_ids, dry_run=dry_run, on_result=recorded))


def deprovision(
    settings: Settings, tenant_id: str, *, backup_dir: Path | None = Path("backups"), run: Run | None = None
) -> Deprovisioned:
    """Drop a tenant's schema or delete its file, after writing a backup into ``backup_dir``
    (None: no backup). The directory of a SQLite tenant goes too, but only if it is then empty.
    Recorded in the run ledger (``run``, or a new one), its backup in the tenant's message: a
    deprovision cannot be undone, and the ledger says where its backup is.

    Backup and drop happen under one lock, and the backup is checked to hold exactly what is
    dropped. DeprovisionRefusedError (exit 1), with nothing dropped and no backup kept, when the
    tenant stays in use past the lock timeout (SQLite: another connection has its file open),
    objects outside it depend on it (PostgreSQL), or the backup cannot be written or verified.
    ``warnings`` name what is neither backed up nor removed (PostgreSQL's large objects).

    A failure of the tenant's (exit 1) carries it as failed in its ``results``, for the
    command's report. A signal (the command line's Interrupted) before the drop commits leaves
    the tenant as it was, no backup kept, and the Interrupted carries it as not-run; from the
    commit on, a signal is held (interrupts.py): the deprovision is recorded and returned as done."""
    namespace = check_tenant_ids(settings, [tenant_id])[tenant_id]  # an invalid id is refused first
    before: str | None = None
    try:
        with invoked(settings) as inv:
            backend = inv.backend
            state = backend.read_states([tenant_id])[tenant_id]
            if not state.exists:
                raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist (no {namespace})")
            before = state_of(inv.chain, state)[0]
            kept = tuple(backend.kept_by_deprovision(tenant_id))
            backup = backend.deprovision(tenant_id, backup_dir)
    except Interrupted as stop:  # before the drop committed: the tenant is as it was
        interrupts.hold()  # what follows is reporting it: printed whole
        if before is None:  # stopped before its revision was read: read it now, to report it as it is
            before = _revision_now(settings, tenant_id)
        why = f"interrupted by {stop.signal_name} before anything was dropped: the tenant is as it was, no backup kept"
        stop.results = [TenantResult(tenant_id, namespace, Action.NOT_RUN, before, before, why)]
        raise
    except DocexMigrateError as exc:
        if exc.exit_code == EXIT_FAILED:  # the tenant's failure: reported as its result too
            exc.results = [TenantResult(tenant_id, namespace, Action.FAILED, before, before, str(exc))]
        raise
    advice = restore_command(settings, tenant_id, backup) if backup else None
    done = Deprovisioned(tenant_id, namespace, backup, kept, from_revision=before, restore=advice)
    record = done.as_result()
    try:
        record.backup = backup_record(backup) if backup else None  # what restore knows it by
    except OSError as exc:  # the tenant is gone already: say so, never fail now
        log.warning("the backup %s cannot be read back to record it (%s): restore will not know it", backup, exc)
    (run or Run(settings, "deprovision", tenant_id)).deprovisioned(record, inv.chain)
    return done


def _revision_now(settings: Settings, tenant_id: str) -> str | None:
    """The tenant's revision as it is now (None: base, or it cannot be read)."""
    try:
        with invoked(settings) as inv:
            return state_of(inv.chain, inv.backend.read_states([tenant_id])[tenant_id])[0]
    except Exception:  # reporting an interrupted command: never a second failure
        return None


def restore(settings: Settings, tenant_id: str, backup: Path, *, run: Run | None = None) -> Restored:
    """Bring a deprovisioned tenant back from the backup its deprovision wrote, at the revision
    it had then (restoration.py): only the backup the run ledger recorded for this tenant
    (matched by its SHA-256, so a renamed, edited or truncated file, or another tenant's, is
    refused), only while the tenant does not exist, atomically. Recorded as a run (``run``, or
    a new one). RestoreRefusedError (exit 2), nothing changed, otherwise. ``upgrade`` it next
    when it is behind the head (``Restored.behind``). An older backup of a tenant deprovisioned
    again since is restored too; ``Restored.newer`` names the tenant's newer backups.

    A signal (the command line's Interrupted) before the commit rolls the restore back: nothing
    changed, so nothing is recorded (as an upgrade with nothing to do records nothing), and the
    Interrupted carries the tenant as not-run. From the commit on, a signal is held
    (interrupts.py): the restore is recorded and returned as done."""
    namespace = check_tenant_ids(settings, [tenant_id])[tenant_id]  # an invalid id is refused first
    try:
        with invoked(settings) as inv:
            result, record = restoration.restore(inv, tenant_id, backup)
    except Interrupted as stop:  # before the commit: rolled back, nothing to record
        interrupts.hold()  # what follows is reporting it: printed whole
        stop.results = [restoration.not_restored(tenant_id, namespace, stop)]
        raise
    run = run or Run(settings, "restore", tenant_id)
    run.done_at_once(result, inv.chain, result.to_revision)
    run_id = run.run_id if run.recorded else None
    return Restored(
        result,
        backup.absolute(),
        record.run_id,
        inv.chain.head,
        run_id,
        upgrade=command(settings, "upgrade", "--tenant", tenant_id),
        show=command(settings, "runs", "show", run_id) if run_id else "",
        newer=tuple((str(path), run) for path, run in record.newer),
    )


def verify(
    settings: Settings,
    tenant_ids: Sequence[str] | None = None,
    *,
    shard: tuple[int, int] | None = None,
    repair: bool = False,
    chain: Chain | None = None,
    run: Run | None = None,
) -> list[TenantDrift]:
    """Every tenant (None = every tenant found) compared with the snapshot of the revision it is
    stamped at (drift.py); one TenantDrift each. Read-only unless ``repair``: then each drifted
    tenant whose drift is only indexes is repaired, in its own transaction under its lock, and
    recorded as it is (``run``, or a new ``repair`` run: each tenant repaired, or failed, with
    what was done; a repair that changes nothing records nothing).

    A signal (the command line's Interrupted) stops the repairs: the tenant in flight rolls
    back, the run is ended as interrupted (the tenants repaired before it stay recorded; the
    rest are recorded not-run, when the run has anything recorded at all), and the Interrupted
    carries every tenant's verdict, those not repaired saying why. A signal after the last
    repair committed stops nothing (interrupts.py)."""
    with invoked(settings, chain=chain, shard=shard, run=run) as inv:
        if not repair:
            return drift.verify(inv, tenant_ids)
        run = inv.run = inv.run or Run(settings, "repair", " ".join(tenant_ids) if tenant_ids else "--all-tenants")
        record = run.as_it_comes(inv.chain)
        attempted: list[TenantResult] = []

        def recorded(result: TenantResult) -> None:
            attempted.append(result)
            record(result)

        try:
            rows = drift.verify(inv, tenant_ids, repair=True, on_repair=recorded)
        except Interrupted as stop:  # it carries every tenant's verdict; the ledger gets the repairs told
            run.close(attempted, error=stop, chain=inv.chain)
            raise
        except BaseException as exc:
            run.close([], error=exc, chain=inv.chain)
            raise
        run.close(attempted, chain=inv.chain)
        return rows


def check(settings: Settings, only: Sequence[str] | None = None) -> list[CheckResult]:
    """The CI migration checks (checks.py), or only those named; one CheckResult each. The
    database checks run on the configured backend and, when that is not SQLite, on SQLite too
    (check_backends.py)."""
    from . import check_backends  # imported when used: every other command starts without it

    # metadata-matches-head compares the head with the schema.py beside the revisions in use
    # (a checkout's, when run inside one), as autogenerate does.
    return check_backends.run_everywhere(settings, only, metadata=tenant_metadata(script_location(), docex_metadata))


def update_manifest(settings: Settings) -> list[Path]:
    """Record the current revisions as released (revisions.sum, and their snapshots)."""
    from . import checks  # imported when used: every other command starts without it

    return checks.update_manifest(settings)


def upgrade_sql(
    settings: Settings,
    tenant_ids: Sequence[str] | None,
    revision: str = "head",
    output: Path = Path("migration-sql"),
    *,
    shard: tuple[int, int] | None = None,
) -> Review:
    """`upgrade --sql`: each tenant's script for review into ``output``; nothing is run, so
    nothing is recorded."""
    from . import review  # imported when used: every other command starts without it

    with invoked(settings, shard=shard) as inv:
        return review.write_scripts(inv, tenant_ids, revision, output)


def version() -> str:
    """This docex-migrate's version and the chain's head (or why it cannot be loaded)."""
    try:
        head = load_chain().head
    except DocexMigrateError as exc:
        head = f"unavailable: {exc}"
    return f"docex-migrate {tool_version()} (chain head {head})"


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

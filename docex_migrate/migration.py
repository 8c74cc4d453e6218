"""The one plan -> execute loop of every command that changes tenants.

A command plans first, from one bulk read of the selected tenants: each tenant is either
finished already (skipped, refused: a TenantResult) or a WorkItem for the executor. ``execute``
then records the plan in the run (ledger and progress), spends the failure budget on the
refusals, and hands the work to the executor (serial, or on processes); every outcome comes back
as a value, in the order asked, or inside the Interrupted a signal raises. upgrade, downgrade,
undo and resume plan with ``migrate``; provisioning (provisioning.py) plans "head on a fresh
namespace" and runs through the same ``execute``. Staged rollouts (--canary, --waves) run
``migrate`` group by group. ``--plan`` (Invocation.plan_only) runs all of it except the
executor: the plan it reports is the one the command would execute.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import interrupts
from .adoption import adopt
from .advice import command
from .backends import FreshTemplate
from .drift import check_excuses, hold_back_drifted
from .errors import Interrupted
from .executors import WorkItem, collect, execute, in_order, not_run, stopped_after
from .invocation import Invocation
from .restore_advice import backup_path, restore_command
from .results import Action, TenantResult
from .rollout import groups, parse_waves
from .run_history import Resumption, UndoPlan
from .selection import in_shard, select, validated
from .states import State, plan, state_of

# tenant -> where it must still be (a revision, or BASE) under its lock, and the namespace's identity
Expected = Mapping[str, tuple[str, str | None]]


@dataclass
class Plan:
    """What a command decided from its bulk read: the tenants (tenant -> namespace, in the order
    asked), those already finished, and the work for the executor."""

    target: str | None
    namespaces: dict[str, str]
    finished: dict[str, TenantResult] = field(default_factory=dict)
    work: list[WorkItem] = field(default_factory=list)


def execute_plan(
    inv: Invocation, planned: Plan, *, failures_so_far: int = 0, template: FreshTemplate | None = None
) -> list[TenantResult]:
    """Record the plan, then run its work; refusals count towards ``max_failures`` like failures
    do. Every tenant's result in order (or Interrupted carrying them)."""
    finished, work, run = planned.finished, planned.work, inv.run
    if run is not None:
        run.planned(planned.target, planned.namespaces, finished, work, inv.chain)
    failures = failures_so_far + sum(r.failed for r in finished.values())
    budget = None if inv.max_failures is None else inv.max_failures - failures
    interrupted = None
    if budget is not None and budget <= 0:
        finished.update((i.tenant_id, not_run(i, stopped_after(failures))) for i in work)
    elif inv.plan_only:  # --plan: the work the executor would be handed, handed to no one
        finished.update((i.tenant_id, would(i)) for i in work)
    else:
        on_result, on_start = (run.on_result, run.on_start) if run is not None else (None, None)
        interrupted = collect(
            finished,
            lambda: execute(
                inv.settings,
                inv.backend,
                work,
                jobs=inv.jobs,
                max_failures=budget,
                template=template,
                on_result=on_result,
                on_start=on_start,
                chain=inv.chain,
            ),
        )
    return in_order(finished, planned.namespaces, interrupted)


def would(item: WorkItem) -> TenantResult:
    """What ``item`` would do, as a --plan reports it: from where the bulk read found it to its target."""
    if item.action == Action.PROVISIONED:
        action = Action.WOULD_PROVISION
    else:
        action = Action.WOULD_DOWNGRADE if item.downgrade else Action.WOULD_UPGRADE
    return TenantResult(item.tenant_id, item.namespace, action, item.revision, item.target)


def migrate(
    inv: Invocation,
    namespaces: dict[str, str],
    target: str | None,
    *,
    downgrade: bool = False,
    failures_so_far: int = 0,
    verify_first: bool = False,
    expected: Expected | None = None,
) -> list[TenantResult]:
    """Plan the tenants from one bulk read, then execute. ``expected`` (undo): tenant -> the
    revision (or BASE) it must still be at when its lock is taken, and the identity of the
    namespace it must still be (None: not recorded, not checked)."""
    states = inv.backend.read_states(namespaces)
    planned = Plan(target, namespaces)
    for tenant_id, namespace in namespaces.items():
        state = states[tenant_id]
        decided = plan(inv.chain, tenant_id, namespace, state, target, downgrade=downgrade, settings=inv.settings)
        if decided is not None:
            planned.finished[tenant_id] = decided
            continue
        expect, identity = expected[tenant_id] if expected else (None, state.identity)
        revision = state_of(inv.chain, state)[0]
        item = WorkItem(
            tenant_id, namespace, revision, target, downgrade, versioned=state.versioned, expect=expect, identity=identity
        )
        planned.work.append(item)
    if verify_first:  # a tenant not proven exactly its revision is left alone, as a failure
        planned.work = hold_back_drifted(inv.settings, inv.backend, inv.chain, planned.work, planned.finished)
    return execute_plan(inv, planned, failures_so_far=failures_so_far)


def selected(inv: Invocation, tenant_ids: Sequence[str] | None) -> dict[str, str]:
    """The tenants named (validated) or found, within the invocation's shard."""
    return in_shard(select(inv.backend, tenant_ids), inv.shard)


def upgrade(
    inv: Invocation,
    tenant_ids: Sequence[str] | None,
    target: str | None,
    *,
    adopt_first: bool = False,
    verify_first: bool = False,
    canary: Sequence[str] = (),
    waves: str | None = None,
    pause: float | None = None,
    resumed: Resumption | None = None,
) -> list[TenantResult]:
    """The tenants to ``target``, adopting the unversioned ones first if asked, in stages if
    asked (see api.upgrade). ``resumed``: the run this one resumes, whose staging it keeps
    unless ``canary`` or ``waves`` is given (``pause``, when given, overrides its pause)."""
    if verify_first:  # a bad excuse is refused before the first tenant, not at the first wave
        check_excuses(inv.settings, inv.backend, inv.chain)
    rollout = _rollout(inv, tenant_ids, canary, waves, pause, resumed, adopt_first)
    if rollout is None:
        if adopt_first and inv.run is not None:  # what --resume keeps: a resume adopts too
            inv.run.staging = json.dumps({"adopt": True})
        adopted = _adopt_unversioned(inv, tenant_ids, target) if adopt_first else {}
        failed_adoptions = sum(r.failed for r in adopted.values())
        results = migrate(inv, selected(inv, tenant_ids), target, failures_so_far=failed_adoptions, verify_first=verify_first)
    else:  # each group adopted as it is reached: a tenant past the last wave is never touched
        adopted = {}
        results = _in_waves(inv, rollout, target, verify_first, adopt=adopted if adopt_first else None)
    return [_after_adoption(adopted.get(r.tenant_id), r) for r in results]


def deprovisioned_since(inv: Invocation, run_id: str, resumed: Resumption) -> list[TenantResult]:
    """The tenants of the resumed run that a deprovision dropped since and that do not exist
    now: skipped, each naming the deprovision and how to bring it back (restore, then resume
    the run again), so that a group is not stopped by a tenant no longer there."""
    if not resumed.deprovisioned:
        return []
    present = set(inv.backend.discover())
    skipped = []
    for tenant_id, row in resumed.deprovisioned.items():
        if tenant_id in present:
            continue
        backup = backup_path(row.get("backup"))
        how = (
            f"`{restore_command(inv.settings, tenant_id, backup)}` brings it back"
            if backup is not None
            else f"`{command(inv.settings, 'runs', 'show', str(row['run_id']))}` says what became of it; a restore brings it back"
        )
        again = command(inv.settings, "upgrade", "--resume", run_id)
        why = f"deprovisioned since run {run_id} by deprovision run {row['run_id']}: {how}, then `{again}`"
        skipped.append(TenantResult(tenant_id, inv.backend.namespace(tenant_id), Action.SKIPPED, None, None, why))
    return skipped


@dataclass
class Rollout:
    """A staged run: the selected tenants, the groups to run in order, the tenants no group
    reaches, whether the first group is the canaries, the pause between groups, and what the
    run's ledger row records of it (``staging``, JSON: what ``--resume`` keeps, with
    ``adopt``: true when the run adopts each group's unversioned tenants)."""

    namespaces: dict[str, str]
    groups: list[list[str]]
    beyond: list[str]
    canaries: bool
    pause: float
    staging: str


def _rollout(
    inv: Invocation,
    tenant_ids: Sequence[str] | None,
    canary: Sequence[str],
    waves: str | None,
    pause: float | None,
    resumed: Resumption | None,
    adopt_first: bool = False,
) -> Rollout | None:
    """The staging of this run, or None for one group. Given options win; a resume otherwise
    keeps its run's groups for the tenants left (groups with none left dropped), with the
    tenants past its last wave as one group after them. Bad specs and canaries are refused
    before anything runs."""
    if canary or waves is not None:
        sizes = parse_waves(waves) if waves is not None else []
        validated(inv.backend, canary)
        namespaces = selected(inv, tenant_ids)
        planned, beyond = groups(list(namespaces), list(canary), sizes)
        canaries = list(dict.fromkeys(canary))
    elif resumed is not None and resumed.staging is not None and "canary" in resumed.staging:  # a staged run's
        namespaces = selected(inv, tenant_ids)
        numbers = sorted({resumed.waves[t] for t in namespaces if t in resumed.waves})
        planned = [[t for t in namespaces if resumed.waves.get(t) == n] for n in numbers]
        planned += [[t for t in namespaces if t not in resumed.waves]] if len(namespaces) > len(resumed.waves) else []
        planned = [group for group in planned if group]
        beyond, waves = [], None  # the groups are the resumed run's, not a spec's
        was = set(resumed.staging.get("canary") or ())
        canaries = planned[0] if planned and numbers[:1] == [1] and was and set(planned[0]) <= was else []
        if pause is None:
            pause = float(resumed.staging.get("pause") or 0.0)
    else:
        return None
    seconds = pause or 0.0
    staging = {"canary": canaries, "waves": waves, "pause": seconds} | ({"adopt": True} if adopt_first else {})
    return Rollout(namespaces, planned, beyond, bool(canaries), seconds, json.dumps(staging))


def _in_waves(
    inv: Invocation,
    rollout: Rollout,
    target: str | None,
    verify_first: bool,
    *,
    adopt: dict[str, TenantResult] | None,
) -> list[TenantResult]:
    """Each group through the ordinary migration, one after the other (adopting its unversioned
    tenants first when ``adopt`` collects the adoptions); stop after the first group with a
    failure. The rest are reported not run, at the revision they have. Every tenant is in the
    run's ledger from the start, with its group, so a signal between or during waves leaves
    the later ones for ``--resume``, and the Interrupted carries every tenant's result. The
    progress display is told the whole run's count (the tenants with something to do in the
    groups), each group with something to do (the first is the canaries when given) and
    each pause: only between groups with something to do, never before one with nothing."""
    namespaces, planned, beyond = rollout.namespaces, rollout.groups, rollout.beyond
    states = inv.backend.read_states(namespaces)
    before = {t: state_of(inv.chain, states[t])[0] for t in namespaces}

    def to_do(tenant_id: str) -> bool:
        decided = plan(
            inv.chain, tenant_id, namespaces[tenant_id], states[tenant_id], target, downgrade=False, settings=inv.settings
        )
        return decided is None or (adopt is not None and decided.action == Action.NEEDS_ADOPT)

    work = [sum(map(to_do, group)) for group in planned]
    if inv.run is not None:
        inv.run.staging = rollout.staging
        wave = {t: number for number, group in enumerate(planned, start=1) for t in group}
        inv.run.reserve(target, {t: (namespaces[t], before[t]) for t in namespaces}, wave)
    progress = inv.progress
    if progress is not None:  # the counter runs to the end of the run: every tenant it will reach with something to do
        progress.expect(sum(work))
    limit, failures, worked = inv.max_failures, 0, False
    finished: dict[str, TenantResult] = {}
    try:
        for number, group in enumerate(planned):
            if work[number]:
                if worked and rollout.pause > 0 and not inv.plan_only:
                    if progress is not None:
                        progress.pausing(rollout.pause, number + 1, len(planned))
                    time.sleep(rollout.pause)
                if progress is not None:
                    progress.wave(number + 1, len(planned), work[number], rollout.canaries and not number)
                worked = True
            if adopt is not None:
                adopted = _adopt_unversioned(inv, group, target)
                adopt.update(adopted)
                failures += sum(r.failed for r in adopted.values())
            got = migrate(inv, {t: namespaces[t] for t in group}, target, failures_so_far=failures, verify_first=verify_first)
            finished.update((r.tenant_id, r) for r in got)
            failures += sum(r.failed for r in got)
            if any(r.failed for r in got) or (limit is not None and failures >= limit):
                what = f"group {number + 1} of {len(planned)}"  # the canaries, when given, are group 1
                left = [t for later in planned[number + 1 :] for t in later]
                finished.update(not_reached(inv, left, f"the rollout stopped after {what} failed", target))
                break
        # Past the last wave whether or not a wave failed: no wave was ever to reach them.
        past = _past_the_last_wave(inv, len(namespaces) - len(beyond), len(namespaces))
        finished.update(not_reached(inv, beyond, past, target))
    except Interrupted as stop:
        finished.update((r.tenant_id, r) for r in stop.results or [])
        left = [t for t in namespaces if t not in finished]
        finished.update(not_reached(inv, left, f"interrupted by {stop.signal_name} (--resume continues)", target))
        for t in left:  # the signal came after its commit, before its wave returned
            if finished[t].to_revision == target != before[t]:
                finished[t] = TenantResult(
                    t, namespaces[t], Action.UPGRADED, before[t], target, f"committed just before {stop.signal_name}"
                )
        stop.results = _in_their_waves([finished[t] for t in namespaces if t in finished], planned)
        raise
    return _in_their_waves([finished[t] for t in namespaces if t in finished], planned)


def _past_the_last_wave(inv: Invocation, reached: int, selected: int) -> str:
    """Why a tenant no wave reaches is not run, and what reaches it: the same in a plan (RUN: it
    has no run yet) and in the run (its id). A run that recorded nothing (no wave changed a
    tenant) cannot be resumed: then an upgrade whose waves reach every tenant."""
    why = f"past the last wave (the waves reach {reached} of these {selected} tenants)"
    if inv.plan_only or (inv.run is not None and inv.run.recorded):
        run = inv.run.run_id if inv.run is not None else "RUN"
        return f"{why}: `{command(inv.settings, 'upgrade', '--resume', run)}` continues with them"
    return f"{why}: no run was recorded to resume; an upgrade whose last wave is 100% reaches them"


def _in_their_waves(results: list[TenantResult], planned: list[list[str]]) -> list[TenantResult]:
    """Each result told the group (wave) its tenant is in, from 1; past the last wave: None."""
    wave = {t: number for number, group in enumerate(planned, start=1) for t in group}
    for result in results:
        result.wave = wave.get(result.tenant_id)
    return results


def not_reached(inv: Invocation, tenant_ids: list[str], why: str, upgrade_target: str | None = None) -> dict[str, TenantResult]:
    """Not-run results for tenants a stopped run never reached, at the revision each has now
    (one bulk read for all of them). With ``upgrade_target``, those already there are skipped
    instead: there is nothing to run for them, so nothing for ``--resume`` to continue."""
    if not tenant_ids:
        return {}
    namespaces = validated(inv.backend, tenant_ids)
    states = inv.backend.read_states(tenant_ids)
    results = {}
    for tenant_id in tenant_ids:
        revision = state_of(inv.chain, states[tenant_id])[0]
        if upgrade_target is not None:
            decided = plan(
                inv.chain,
                tenant_id,
                namespaces[tenant_id],
                states[tenant_id],
                upgrade_target,
                downgrade=False,
                settings=inv.settings,
            )
            if decided is not None and decided.action == Action.SKIPPED:
                results[tenant_id] = decided
                continue
        results[tenant_id] = TenantResult(
            tenant_id, namespaces[tenant_id], Action.NOT_RUN, revision, revision, f"not attempted: {why}"
        )
    return results


def undo(inv: Invocation, undoing: UndoPlan) -> list[TenantResult]:
    """Each group of an undo plan back to the revision it had; the rest as the plan left them."""
    results = list(undoing.left_alone)
    for (target, downgrade), tenants in undoing.groups.items():
        try:
            namespaces = validated(inv.backend, tenants)
            results += migrate(inv, namespaces, target, downgrade=downgrade, expected=undoing.left_at)
        except Interrupted as stop:
            done_ids = {r.tenant_id for r in results + (stop.results or [])}
            left = [t for group in undoing.groups.values() for t in group if t not in done_ids]
            stop.results = results + (stop.results or []) + list(not_reached(inv, left, "interrupted").values())
            raise
    return sorted(results, key=lambda r: r.tenant_id)


def _adopt_unversioned(inv: Invocation, tenant_ids: Sequence[str] | None, target: str | None) -> dict[str, TenantResult]:
    """adopt, for the selected tenants that DocEX created itself (unversioned, with tables).
    Stopped by a signal, the Interrupted carries every selected tenant: those adopted not-run
    (they are versioned now, and not at ``target``), the rest as adopt and not_reached say."""
    namespaces = selected(inv, tenant_ids)
    states = inv.backend.read_states(namespaces)
    unversioned = [t for t in namespaces if state_of(inv.chain, states[t])[1] == State.UNVERSIONED and states[t].table_count]
    if not unversioned:
        return {}
    adopted: list[TenantResult] = []
    try:
        adopted = adopt(inv, unversioned)
        interrupts.raise_held()  # a signal after the last adoption committed stops the run before any upgrade
    except Interrupted as stop:  # every tenant not-run: those adopted are versioned now, for --resume to upgrade
        interrupts.hold()
        done = [_not_upgraded(r, stop) for r in stop.results or adopted]
        rest = [t for t in namespaces if t not in {r.tenant_id for r in done}]
        stop.results = done + list(not_reached(inv, rest, "interrupted", target).values())
        raise
    return {r.tenant_id: r for r in adopted}


def _not_upgraded(adopted: TenantResult, stop: Interrupted) -> TenantResult:
    if adopted.action != Action.ADOPTED:
        return adopted
    why = f"{adopted.message}; not upgraded: interrupted by {stop.signal_name} before its turn"
    return TenantResult(adopted.tenant_id, adopted.namespace, Action.NOT_RUN, adopted.to_revision, adopted.to_revision, why)


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

"""The run ledger read back: recent runs, one run's tenants, and the plans that continue a run
(``--resume``) or take it back (``undo``).

Reading never trusts a ``pending`` row of a run that is gone: a ``kill -9`` can fall between a
tenant's commit and its ledger row. Such a row is reconciled with where the tenant went next:
the revision the next run of the fleet found it at, or else the tenant's revision now (one
bulk read). A run is ``running`` only while its process lives (same host: its pid and start
time; another host: a fresh heartbeat); otherwise a run that never finished is ``interrupted``.
Read-only: it creates nothing (the ledger's tables are created by the first recorded run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .advice import command
from .backends import Backend, LedgerPlace, backend_for, open_backend
from .chain import BASE, Chain, load_chain
from .config import Settings
from .errors import UsageError
from .ledger import Ledger
from .restore_advice import backup_path, restore_command
from .results import PENDING, Action, RunDetail, RunInfo, RunTenant, TenantResult
from .run_record import INTERRUPTED, MOVED, REACHED, RUNNING, STALE_AFTER, UNDOABLE, _process_start, target_name, target_of
from .states import state_of

log = logging.getLogger(__name__)


def _alive(row: Mapping[str, Any]) -> bool:
    """Whether a run recorded as running still has a live process."""
    if row["state"] != RUNNING:
        return False
    if row["host"] == socket.gethostname() and sys.platform == "linux":
        return row["process_start"] is not None and _process_start(row["pid"]) == row["process_start"]
    heartbeat = datetime.fromisoformat(row["heartbeat_at"])
    return datetime.now(heartbeat.tzinfo) - heartbeat < STALE_AFTER


def _state(row: Mapping[str, Any]) -> str:
    if row["state"] == RUNNING and not _alive(row):
        return INTERRUPTED
    return str(row["state"])


def _info(row: Mapping[str, Any], counts: dict[str, int]) -> RunInfo:
    return RunInfo(
        run_id=row["run_id"],
        command=row["command"],
        target=row["target"],
        selection=row["selection"],
        resumes=row["resumes"],
        undoes=row["undoes"],
        user=row["user_name"],
        host=row["host"],
        pid=row["pid"],
        version=row["version"],
        chain_head=row["chain_head"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        state=_state(row),
        error=row["error"],
        counts=dict(sorted(counts.items())),
        staging=json.loads(row["staging"]) if row.get("staging") else None,
    )


def _reconciled(
    ledger: Ledger, backend: Backend, chain: Chain, run: Mapping[str, Any], rows: list[dict[str, Any]]
) -> list[RunTenant]:
    """The run's tenants, a dead run's pending ones resolved from where each tenant went next."""
    pending = [r for r in rows if r["action"] == PENDING]
    after: dict[str, str | None] = {}
    if pending and _state(run) != RUNNING:
        later = ledger.later_rows(ledger.place.fleets, run["started_at"], [r["tenant_id"] for r in pending])
        after = {t: found[0]["from_revision"] for t, found in later.items()}
        unseen = [r["tenant_id"] for r in pending if r["tenant_id"] not in after]
        if unseen:
            for tenant_id, state in backend.read_states(unseen).items():
                after[tenant_id] = state_of(chain, state)[0]
    out = []
    for row in rows:
        action, to_revision, message = row["action"], row["to_revision"], row["message"]
        if action == PENDING and row["tenant_id"] in after:
            to_revision, target, before = after[row["tenant_id"]], target_of(row["target"]), row["from_revision"]
            if to_revision == target != before:
                action = _moved_action(chain, run["command"], before, target)
                message = "committed before the run died (reconciled)"
            elif to_revision == before:
                action, message = Action.NOT_RUN.value, "not reached: the run was interrupted"
            else:
                action, message = Action.NOT_RUN.value, f"the run was interrupted; the tenant was then at {to_revision or 'base'}"
        out.append(
            RunTenant(
                row["tenant_id"],
                row["namespace"],
                action,
                row["from_revision"],
                to_revision,
                row["target"],
                row["finished_at"],
                row["duration_ms"],
                message,
                row.get("identity"),
                row.get("backup"),
                row.get("wave"),
            )
        )
    return out


def _moved_action(chain: Chain, command: str, before: str | None, target: str | None) -> str:
    if command == "provision" and before is None:
        return Action.PROVISIONED.value
    try:
        up = chain.position(before) < chain.position(target)
    except ValueError:
        up = command != "downgrade"
    return str(Action.UPGRADED if up else Action.DOWNGRADED)


@contextlib.contextmanager
def _reading(settings: Settings) -> Iterator[tuple[Backend, LedgerPlace, Ledger | None]]:
    with open_backend(settings) as backend:
        place = backend.ledger()
        ledger = Ledger.for_reading(place)
        try:
            yield backend, place, ledger
        finally:
            if ledger is not None:
                ledger.close()


def list_runs(settings: Settings, *, limit: int = 20, chain: Chain | None = None) -> list[RunInfo]:
    """The fleet's most recent runs, newest first. Read-only: creates nothing."""
    chain = chain or load_chain()
    with _reading(settings) as (backend, place, ledger):
        if ledger is None:
            return []
        rows = ledger.recent(place.fleets, limit)
        counts = ledger.counts([r["run_id"] for r in rows])
        infos = []
        for row in rows:
            found = counts[row["run_id"]]
            if found.get(PENDING) and _state(row) != RUNNING:
                tenants = _reconciled(ledger, backend, chain, row, ledger.tenants(row["run_id"]))
                found = dict(Counter(t.action for t in tenants))
            infos.append(_info(row, found))
        return infos


def show_run(settings: Settings, run_id: str, *, chain: Chain | None = None) -> RunDetail:
    """One run and its tenants, reconciled. Read-only."""
    chain = chain or load_chain()
    with _reading(settings) as (backend, place, ledger):
        row = _find(settings, ledger, place, run_id)
        assert ledger is not None
        tenants = _reconciled(ledger, backend, chain, row, ledger.tenants(run_id))
        return RunDetail(_info(row, dict(Counter(t.action for t in tenants))), tenants)


def revisions_now(settings: Settings, tenant_ids: Sequence[str], chain: Chain) -> dict[str, str | None]:
    """The tenants' revisions, read in bulk (read-only)."""
    with open_backend(settings) as backend:
        return {t: state_of(chain, s)[0] for t, s in backend.read_states(tenant_ids).items()}


def _find(settings: Settings, ledger: Ledger | None, place: LedgerPlace, run_id: str) -> dict[str, Any]:
    if ledger is None:
        raise UsageError(f"no run {run_id!r}: no run has been recorded yet ({place.where})")
    row = ledger.run(run_id)
    if row is None:
        raise UsageError(f"no run {run_id!r} in the run ledger ({place.where}): see `{command(settings, 'runs')}`")
    if row["fleet"] not in place.fleets:
        raise UsageError(f"run {run_id!r} belongs to another database or template ({row['fleet']}), not {place.database}")
    return row


def _continued(settings: Settings, ledger: Ledger, run_id: str, busy: str) -> None:
    """A live run that already resumes or undoes ``run_id``: refused (``busy`` "refuse": two
    resumes at once would each take the tenants left, bypassing the waves' pauses), a warning
    line (``busy`` "warn": a plan changes nothing), or nothing (``busy`` "ignore"). A run whose
    process is gone (``_alive``) does not count."""
    if busy == "ignore":
        return
    other = next((r for r in ledger.continuing(run_id) if _alive(r)), None)
    if other is None:
        return
    doing = "resumed" if other["resumes"] == run_id else "undone"
    said = (
        f"run {run_id} is being {doing} by run {other['run_id']} (pid {other['pid']} on {other['host']}, "
        f"started {other['started_at']})"
    )
    if busy == "warn":
        log.warning("%s: this plan is of the tenants as they are now, which that run may change first", said)
        return
    raise UsageError(f"{said}: wait for it, or `{command(settings, 'runs', 'show', other['run_id'])}`")


def _settled(
    settings: Settings, run_id: str, chain: Chain, busy: str = "refuse"
) -> tuple[dict[str, Any], list[RunTenant], Backend]:
    """A run that has ended, and its reconciled tenants: what resume and undo start from.
    ``busy``: what to do when a live run already resumes or undoes it (``_continued``)."""
    backend = backend_for(settings)
    try:
        place = backend.ledger()
        ledger = Ledger.for_reading(place)
        try:
            row = _find(settings, ledger, place, run_id)
            assert ledger is not None
            if _state(row) == RUNNING:
                raise UsageError(f"run {run_id} is still running (pid {row['pid']} on {row['host']}): let it finish, or stop it")
            _continued(settings, ledger, run_id, busy)
            tenants = _reconciled(ledger, backend, chain, row, ledger.tenants(run_id))
        finally:
            if ledger is not None:
                ledger.close()
    except BaseException:
        backend.dispose()
        raise
    return row, tenants, backend


@dataclass
class Resumption:
    """What ``--resume RUN`` takes on: RUN's tenants that did not reach its target, that target,
    RUN's command, its staging as recorded (a staged rollout's canaries, wave spec and pause;
    ``adopt``: true when RUN adopted unversioned tenants first), the group each of those
    tenants was in (``waves``; none: past the last wave), and of an upgrade's tenants those a
    deprovision dropped since RUN (``deprovisioned``: tenant -> that deprovision's ledger row;
    a restore or provision since takes a tenant off it)."""

    tenant_ids: list[str]
    target: str
    command: str
    staging: dict[str, Any] | None = None
    waves: dict[str, int] = field(default_factory=dict)
    deprovisioned: dict[str, dict[str, Any]] = field(default_factory=dict)


def resumption(settings: Settings, run_id: str, command: str, chain: Chain, *, busy: str = "refuse") -> Resumption:
    """The tenants of ``run_id`` that did not reach its target, that target, the run's command
    (a provision's tenants may not exist yet) and its staging: what ``upgrade --resume`` /
    ``downgrade --resume`` runs. UsageError (exit 2) when it cannot.

    Unlike undo, resume does not ask whether a tenant is still the namespace the run planned
    (its identity): it finishes the run's aim, bringing each tenant to the target wherever it
    is now, as running the same command again would; it never takes back what another did.
    ``busy``: refused (or, for a plan, "warn") while another live run resumes or undoes it."""
    row, tenants, backend = _settled(settings, run_id, chain, busy)
    try:
        resumable = {"upgrade": ("upgrade", "provision"), "downgrade": ("downgrade",)}[command]
        if row["command"] not in resumable:
            raise UsageError(
                f"run {run_id} was {_a(row['command'])}, not {_a(command)}: it cannot be resumed by `{command} --resume`"
            )
        left = [t for t in tenants if t.action not in REACHED]
        # a provision's missing tenant is still to be provisioned: only an upgrade's can be gone
        gone = _deprovisioned_since(backend, row, [t.tenant_id for t in left]) if row["command"] == "upgrade" else {}
    finally:
        backend.dispose()
    target = str(row["target"] or BASE)
    if target != BASE and not chain.knows(target):
        raise UsageError(
            f"run {run_id} went to revision {target}, which this chain does not know: use the docex-migrate that ran it"
        )
    staging = json.loads(row["staging"]) if row.get("staging") else None
    waves = {t.tenant_id: t.wave for t in left if t.wave is not None}
    return Resumption([t.tenant_id for t in left], target, str(row["command"]), staging, waves, gone)


def _deprovisioned_since(backend: Backend, run: Mapping[str, Any], tenant_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The tenants whose last event since ``run`` (deprovision, restore, provision) is a
    deprovision: tenant -> that deprovision's row."""
    events = (Action.DEPROVISIONED, Action.RESTORED, Action.PROVISIONED)
    last = _last_event_since(backend, run, tenant_ids, events)
    return {t: row for t, row in last.items() if row["action"] == Action.DEPROVISIONED.value}


def _last_event_since(
    backend: Backend, run: Mapping[str, Any], tenant_ids: list[str], events: tuple[Action, ...]
) -> dict[str, dict[str, Any]]:
    """Each tenant's last ledger row since ``run`` whose action is one of ``events``."""
    place = backend.ledger()
    ledger = Ledger.for_reading(place)
    if ledger is None or not tenant_ids:
        return {}
    try:
        later = ledger.later_rows(place.fleets, run["started_at"], tenant_ids)
    finally:
        ledger.close()
    wanted = {e.value for e in events}
    found = {}
    for tenant_id, rows in later.items():
        last = [r for r in rows if r["action"] in wanted][-1:]
        if last:
            found[tenant_id] = last[0]
    return found


def resume_plan(settings: Settings, run_id: str, command: str, chain: Chain) -> tuple[list[str], str, str]:
    """``resumption``'s tenants, target and command (whether another run resumes it meanwhile
    is asked by the resume itself, api._resuming)."""
    found = resumption(settings, run_id, command, chain, busy="ignore")
    return found.tenant_ids, found.target, found.command


def _restored_since(backend: Backend, run: Mapping[str, Any], tenant_ids: list[str]) -> dict[str, str]:
    """The tenants a restore brought back since ``run`` (and no deprovision dropped again
    since): tenant -> that restore's run."""
    last = _last_event_since(backend, run, tenant_ids, (Action.RESTORED, Action.DEPROVISIONED))
    return {t: str(row["run_id"]) for t, row in last.items() if row["action"] == Action.RESTORED.value}


def _restore_advice(settings: Settings, backend: Backend, run: Mapping[str, Any], tenants: list[RunTenant]) -> str:
    """How to bring a deprovision's tenants back: the restore command for each recorded backup
    (an older ledger has only the message naming the backup); for a tenant a restore has
    brought back since, that restore's run instead."""
    restored = _restored_since(backend, run, [t.tenant_id for t in tenants])
    said = [f"{t} has been restored since (by restore run {r})" for t, r in restored.items()]
    waiting = [t for t in tenants if t.tenant_id not in restored]
    commands = [
        f"`{restore_command(settings, t.tenant_id, path)}`" for t in waiting if (path := backup_path(t.backup)) is not None
    ]
    if commands:
        said.append(f"restore it with {'; '.join(commands)}")
    elif waiting:
        messages = "; ".join(f"{t.tenant_id}: {t.message}" for t in waiting if t.message)
        said.append(f"docex-migrate cannot restore it: no backup of it is recorded ({messages or 'none written'})")
    return "; ".join(said)


@dataclass
class UndoPlan:
    """What undo does: tenants grouped by the revision they go back to, and those left alone."""

    groups: dict[tuple[str | None, bool], list[str]]  # (target, downgrade) -> tenants
    left_alone: list[TenantResult]
    # tenant -> where the run left it (BASE for none) and the namespace it moved (None: not
    # recorded), both checked again under the tenant's lock
    left_at: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def undo_plan(settings: Settings, run_id: str, chain: Chain, *, plan_only: bool = False) -> UndoPlan:
    """Every tenant that ``run_id`` moved and that is still where it left it goes back to the
    revision it had before; one that moved since, or that is not the namespace it moved (dropped
    and created again since: its identity differs), is left alone and listed, and so is one the
    undo would take to base (dropping its tables) whose identity was not recorded. Refused while
    another live run resumes or undoes it (a warning line instead for ``plan_only``)."""
    row, tenants, backend = _settled(settings, run_id, chain, "warn" if plan_only else "refuse")
    try:
        if row["command"] == "deprovision":
            raise UsageError(
                f"run {run_id} was a deprovision: undo cannot bring a dropped tenant back; {_restore_advice(settings, backend, row, tenants)}"
            )
        if row["command"] == "restore":
            deprovisions = "; ".join(f"`{command(settings, 'deprovision', t.tenant_id, '--yes')}`" for t in tenants)
            raise UsageError(
                f"run {run_id} was a restore: undo never drops a restored tenant (its data may have changed since); "
                f"if it must go, {deprovisions or '`deprovision` it'}: deprovision backs it up first"
            )
        if row["command"] not in UNDOABLE:
            raise UsageError(
                f"run {run_id} ({row['command']}) cannot be undone: only upgrade, downgrade, provision and undo runs can be"
            )
        moved = [t for t in tenants if t.action in MOVED]
        for t in moved:
            for revision in (t.from_revision, t.to_revision):
                if revision is not None and not chain.knows(revision):
                    raise UsageError(f"run {run_id} moved {t.tenant_id} to or from {revision}, which this chain does not know")
        states = backend.read_states([t.tenant_id for t in moved]) if moved else {}
    finally:
        backend.dispose()
    plan = UndoPlan({}, [])
    for t in moved:
        state = states[t.tenant_id]
        now_at = state_of(chain, state)[0]
        why = None
        if now_at != t.to_revision or not state.exists:
            why = f"moved since run {run_id} (now at {now_at or 'base'}, it left it at {t.to_revision or 'base'})"
        elif t.identity is not None and state.identity != t.identity:
            why = f"dropped and created again since run {run_id} (now at {now_at or 'base'}): not the one it moved"
        elif t.identity is None and t.from_revision is None:
            # No identity, no drop: going back to base drops every table, and without the
            # identity nothing tells this namespace from one deprovisioned and created again
            # since (a run killed before its result row, or an older docex-migrate's ledger).
            did = "created" if t.action == Action.PROVISIONED.value else "moved"
            why = f"cannot prove it is the tenant run {run_id} {did}: its identity was not recorded (now at {now_at or 'base'})"
        if why is not None:
            plan.left_alone.append(TenantResult(t.tenant_id, t.namespace, Action.SKIPPED, now_at, now_at, f"{why}: left alone"))
            continue
        downgrade = chain.position(t.from_revision) < chain.position(t.to_revision)
        plan.groups.setdefault((t.from_revision, downgrade), []).append(t.tenant_id)
        plan.left_at[t.tenant_id] = (target_name(t.to_revision), t.identity)
    return plan


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"

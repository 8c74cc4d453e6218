"""Drift: prove every tenant is exactly the revision its alembic_version claims.

A tenant's live catalog is compared with the chain's own snapshot of the revision it is stamped
at (the normalised snapshot `adopt` uses: tables, columns, types, nullability, defaults, keys,
foreign keys with their actions, uniques, indexes with their whole definition (predicate,
expressions, INCLUDE, collations: backends/catalog.py), enum types, sequences; column order is
not compared). Fast across a fleet:

- each tenant's catalog is fingerprinted in bulk (backends/fingerprints.py: one pg_catalog query
  per batch of schemas; each SQLite file's sqlite_master, read-only);
- tenants are grouped by (revision, fingerprint); the fingerprint is sound (same fingerprint,
  same snapshot), so ONE tenant per group is reflected and compared, and the verdict holds for
  the whole group: 1,000 identical tenants cost one comparison, and memory holds one snapshot
  per distinct catalog, never one per tenant.

Read-only, except `repair`: drift the chain can explain exactly (DocEX's or an operator's
indexes added, dropped or redefined, the tables exactly the revision's) is undone index by index
in one transaction under the tenant's lock, proven equal to the revision, and committed;
anything else is only reported. A tenant whose repair fails is ``failed`` (as the run
ledger records it), its diff kept. Every tenant's outcome is a value (results.TenantDrift), never
an exception; reporting.py prints them. A signal stops a repair run between tenants or rolls
back the tenant in flight; the Interrupted it raises carries every verdict (_repair_each).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from . import adoption, excuses, interrupts, revision_snapshots, schema
from .adoption import Decision
from .advice import command
from .backends import Backend
from .backends.base import CatalogRead
from .backends.catalog import empty_snapshot
from .chain import Chain
from .config import Settings
from .errors import DocexMigrateError, Interrupted
from .executors import WorkItem
from .invocation import Invocation
from .results import (
    AHEAD,
    BEHIND,
    CORRUPT,
    CURRENT,
    DRIFTED,
    MAX_DIFF,
    OK,
    REPAIR_FAILED,
    REPAIRED,
    UNREADABLE,
    UNVERIFIED,
    UNVERSIONED,
    Action,
    TenantDrift,
    TenantResult,
    describe_error,
)
from .runner import current_revision
from .scratch import namespace_snapshot
from .selection import in_shard, select
from .snapshot import Snapshot, differences, snapshot
from .states import state_of, why_not_migratable

log = logging.getLogger(__name__)


def no_snapshot(settings: Settings, revision: str | None) -> str:
    """Why a tenant cannot be verified: no snapshot of its revision, and no CREATE to compute it."""
    return (
        f"cannot verify: no snapshot of revision {revision} for this backend (the package ships none and this "
        f"role may not compute it on a scratch schema): run `{command(settings, 'check', '--update-manifest')}`, or grant CREATE"
    )


@dataclass
class _Verdict:
    """The outcome for one (revision, fingerprint) group, from one tenant's full snapshot."""

    diff: list[str]
    repairs: list[adoption.Repair] | None  # the index changes that bring it back; None: not explicable by indexes
    recognition: adoption.Recognition | None = None  # unversioned groups only
    excused: list[str] = field(default_factory=list)  # differences declared deliberate (excuses.py)


def _describe(repairs: list[adoption.Repair]) -> list[str]:
    return adoption.Recognition(Decision.REPAIR, repairs=repairs).describe_repairs()


class _Fleet:
    """The chain's snapshots and the verdicts of the groups seen so far, for one run."""

    def __init__(self, settings: Settings, backend: Backend, chain: Chain) -> None:
        self.settings, self.backend, self.chain = settings, backend, chain
        self.kind = backend.kind
        self._snaps: dict[str, Snapshot] | None = None
        self.verdicts: dict[tuple[str | None, str], _Verdict] = {}

    @property
    def snaps(self) -> dict[str, Snapshot]:
        if self._snaps is None:
            found = revision_snapshots.for_chain(self.settings, self.chain)
            if found is None:  # read-only role, chain newer than the shipped snapshots: use what is shipped
                found = revision_snapshots.shipped(self.kind, self.chain, partial=True) or {}
            self._snaps = found
        return self._snaps

    def check_excuses(self) -> None:
        """Refuse (ConfigError) an excuse that names what a revision of the chain defines, at
        any revision, or a table no revision has (excuses.check)."""
        if self.settings.excused_drift:
            excuses.check(self.settings.excused_drift, self.snaps, schema.TABLE_NAMES)

    def expected(self, revision: str | None) -> Snapshot | None:
        return empty_snapshot(self.kind) if revision is None else self.snaps.get(revision)

    def judge(self, tenant_id: str, namespace: str, read: CatalogRead) -> TenantDrift:
        revision, state = state_of(self.chain, read.state)
        kind = state.value
        row = TenantDrift(tenant_id, namespace, revision, kind, error=read.state.error, fingerprint=read.fingerprint)
        if kind == CORRUPT:
            row.error = why_not_migratable(read.state)
        elif kind == AHEAD:
            row.error = f"is at revision {revision}, which this chain does not know: use a newer docex-migrate"
        elif kind == UNVERSIONED and read.state.table_count:
            self._recognise(row)
        elif kind in (CURRENT, BEHIND):
            self._compare(row)
        return row

    def _group(self, row: TenantDrift, key: tuple[str | None, str], evaluate: Callable[[Snapshot], _Verdict]) -> _Verdict | None:
        """The group's verdict, evaluated on this tenant if it is the first of its group (or the
        group has no fingerprint). None when this tenant's catalog could not be read."""
        if row.fingerprint is not None and key in self.verdicts:
            return self.verdicts[key]
        try:
            actual = namespace_snapshot(self.backend, row.tenant_id)
        except (DocexMigrateError, sa.exc.SQLAlchemyError) as exc:
            row.state, row.error = UNREADABLE, f"cannot read its catalog: {describe_error(exc)}"
            return None
        verdict = evaluate(actual)
        if row.fingerprint is not None:
            self.verdicts[key] = verdict
        return verdict

    def _compare(self, row: TenantDrift) -> None:
        expected = self.expected(row.revision)
        if expected is None:
            row.state, row.error = UNVERIFIED, no_snapshot(self.settings, row.revision)
            return

        def evaluate(actual: Snapshot) -> _Verdict:
            actual, excused = excuses.apply(self.settings.excused_drift, expected, actual)
            diff = differences(expected, actual)
            return _Verdict(diff, adoption.index_repairs(expected, actual) if diff else [], excused=excused)

        verdict = self._group(row, (row.revision, row.fingerprint or ""), evaluate)
        if verdict is None:
            return
        row.state = DRIFTED if verdict.diff else OK
        row.diff = verdict.diff
        row.repairs = _describe(verdict.repairs) if verdict.repairs else []
        row.excused = verdict.excused

    def _recognise(self, row: TenantDrift) -> None:
        snaps = revision_snapshots.for_chain(self.settings, self.chain)
        if snaps is None:
            row.adopt, row.error = Decision.UNKNOWN.value, adoption.no_snapshots(self.settings)
            return

        def evaluate(actual: Snapshot) -> _Verdict:
            return _Verdict([], None, adoption.recognise(actual, snaps, self.chain.order))

        verdict = self._group(row, ("<unversioned>", row.fingerprint or ""), evaluate)
        if verdict is not None and verdict.recognition is not None:
            recognition = verdict.recognition
            row.matches, row.nearest, row.adopt = recognition.matched, recognition.nearest, recognition.action.value

    def _unexcused(self, expected: Snapshot, actual: Snapshot) -> Snapshot:
        """The tenant's snapshot without its excused indexes: never dropped, never drift."""
        return excuses.apply(self.settings.excused_drift, expected, actual)[0]

    def repair(self, row: TenantDrift) -> None:
        """Bring one drifted tenant back to its revision: under its lock, from its own catalog as
        it is now, proven equal to the revision before commit; else rolled back and reported."""
        expected = self.expected(row.revision)
        assert expected is not None
        try:
            with self.backend.transaction(row.tenant_id, create=False) as connection:
                schema = self.backend.schema(row.tenant_id)
                now = current_revision(connection, schema, versioned=True)
                if now != row.revision:
                    raise DocexMigrateError(f"its revision changed meanwhile (now {now or 'base'}); nothing repaired")
                repairs = adoption.index_repairs(expected, self._unexcused(expected, snapshot(connection, schema)))
                if repairs is None:
                    raise DocexMigrateError("its tables changed meanwhile and are no longer the revision's; nothing repaired")
                adoption.apply_repairs(connection, adoption.Recognition(Decision.REPAIR, row.revision, repairs))
                left = differences(expected, self._unexcused(expected, snapshot(connection, schema)))
                if left:  # never commit what is not exactly the revision: the transaction rolls back
                    raise DocexMigrateError(f"after repair it still differs from {row.revision}: {left[0]}; rolled back")
                interrupts.hold()  # it commits now: a signal from here on stops the run after it (interrupts.py)
        except Exception as exc:
            row.state, row.error = REPAIR_FAILED, f"repair failed: {describe_error(exc)}"
            return
        row.state, row.repairs = REPAIRED, _describe(repairs)


def _verify(
    settings: Settings,
    backend: Backend,
    chain: Chain,
    namespaces: dict[str, str],
    *,
    repair: bool,
    on_repair: Callable[[TenantResult], None] | None = None,
) -> list[TenantDrift]:
    fleet = _Fleet(settings, backend, chain)
    reads = backend.read_catalogs(namespaces)
    rows = [fleet.judge(t, ns, reads[t]) for t, ns in namespaces.items()]
    if repair:
        _repair_each(fleet, rows, on_repair or (lambda result: None))
    return rows


def check_excuses(settings: Settings, backend: Backend, chain: Chain) -> None:
    """The config's excuses checked against the chain's snapshots, before a command that applies
    them (verify, upgrade --verify-first) runs anything: ConfigError (exit 2) for a bad one."""
    _Fleet(settings, backend, chain).check_excuses()


def _repair_each(fleet: _Fleet, rows: list[TenantDrift], on_repair: Callable[[TenantResult], None]) -> None:
    """Repair the repairable tenants one by one. A signal stops the run: during a repair, that
    tenant rolls back; once a repair has committed (interrupts.hold), after it is recorded and
    before the next tenant. The tenants not repaired then are told to ``on_repair`` as not-run
    and say why, and Interrupted carries every tenant's verdict (``results``). A signal after
    the last repair committed stops nothing: the command line says it came late."""
    repairable = [row for row in rows if row.repairable]
    for i, row in enumerate(repairable):
        started = False
        try:
            interrupts.raise_held()  # a signal after the previous tenant committed stops the run here
            started = True
            fleet.repair(row)
        except Interrupted as stop:  # the tenant in flight rolled back on the way out
            interrupts.hold()  # what follows is bookkeeping: recorded and printed whole
            why = f"interrupted by {stop.signal_name}"
            row.error = f"{why} while it was being repaired: rolled back, nothing repaired" if started else None
            for left in repairable[i:]:
                left.error = left.error or f"not repaired: {why} before its turn"
                on_repair(repair_result(left, not_run=True))
            raise Interrupted(stop.signum, results=rows) from None
        interrupts.hold()  # its outcome is decided (committed, or rolled back): recorded whole
        on_repair(repair_result(row))


def repair_result(row: TenantDrift, *, not_run: bool = False) -> TenantResult:
    """A repair attempted, as the run ledger records it: repaired (what was done), or failed;
    ``not_run``: a signal stopped the run before (or while) it repaired this tenant."""
    if row.state == REPAIRED:
        return TenantResult(row.tenant_id, row.namespace, Action.REPAIRED, row.revision, row.revision, "; ".join(row.repairs))
    if not_run:
        return TenantResult(row.tenant_id, row.namespace, Action.NOT_RUN, row.revision, row.revision, row.error or "not repaired")
    return TenantResult(row.tenant_id, row.namespace, Action.FAILED, row.revision, row.revision, row.error or "repair failed")


def verify(
    inv: Invocation,
    tenant_ids: Sequence[str] | None = None,
    *,
    repair: bool = False,
    on_repair: Callable[[TenantResult], None] | None = None,
) -> list[TenantDrift]:
    """Every tenant (None = every tenant found, in the invocation's shard) compared with the
    snapshot of the revision it is stamped at; one TenantDrift each. Read-only unless ``repair``:
    then each drifted tenant whose drift is only indexes is repaired, in its own transaction
    under its lock, and ``on_repair`` told of it (the run ledger). A bad excuse in the config
    (excuses.check) is refused first, ConfigError, before any tenant is read."""
    check_excuses(inv.settings, inv.backend, inv.chain)
    namespaces = in_shard(select(inv.backend, tenant_ids), inv.shard)
    return _verify(inv.settings, inv.backend, inv.chain, namespaces, repair=repair, on_repair=on_repair)


def hold_back_drifted(
    settings: Settings, backend: Backend, chain: Chain, work: list[WorkItem], finished: dict[str, TenantResult]
) -> list[WorkItem]:
    """`upgrade --verify-first`: verify the versioned tenants about to be migrated; a tenant that
    is not proven exactly its revision is left untouched, reported as drifted (or failed when it
    could not be verified) in ``finished``, and counts as a failure. Returns the rest of ``work``."""
    versioned = {item.tenant_id: item.namespace for item in work if item.versioned}
    if not versioned:
        return work
    rows = {row.tenant_id: row for row in _verify(settings, backend, chain, versioned, repair=False)}
    keep = []
    for item in work:
        row = rows.get(item.tenant_id)
        if row is None or row.state == OK:
            keep.append(item)
            continue
        result = TenantResult(item.tenant_id, item.namespace, Action.FAILED, row.revision, row.revision)
        if row.state == DRIFTED:
            result.action = Action.DRIFTED
            result.message = f"differs from its revision {row.revision or 'base'}: not touched (see `{command(settings, 'verify', '--tenant', result.tenant_id)}`)"
            result.details = row.diff[:MAX_DIFF]
        else:
            result.message = f"not verified ({row.state}): not touched" + (f": {row.error}" if row.error else "")
        finished[item.tenant_id] = result
    return keep

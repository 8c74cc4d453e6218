"""Bringing tenants that DocEX created itself (with create_all, no alembic_version) under the chain.

Recognition compares a tenant's catalog snapshot with the snapshot of every revision, computed
from the chain itself by migrating a scratch namespace step by step (never a hand-kept copy).

- An exact match is stamped at the newest revision it equals.
- A known hybrid (DocEX re-applies its schema.sql indexes with IF NOT EXISTS on some versions,
  so index sets drift while tables never change) has the tables of a revision exactly but other
  DocEX index definitions. It is repaired by creating, dropping or redefining DocEX's own
  indexes only (they hold no data, so this is provably safe), checked to equal the revision
  exactly, and stamped, all in one transaction.
- Anything else (different tables or columns, an index DocEX never defined) is refused with a
  readable diff, and nothing is touched.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import interrupts, revision_snapshots
from .advice import command
from .backends import Backend, NamespaceState
from .backends.catalog import create_index
from .chain import Chain
from .config import Settings
from .errors import Interrupted, RecognitionError
from .invocation import Invocation
from .results import Action, TenantResult, describe_error
from .runner import stamp_tenant
from .scratch import namespace_snapshot
from .selection import in_shard, select
from .snapshot import Snapshot, differences, snapshot
from .states import NEEDS_A_PERSON, State, TenantStatus, state_of, why_not_migratable

log = logging.getLogger(__name__)


class Decision(str, Enum):
    ADOPT = "adopt"  # an exact match: stamp it
    REPAIR = "repair"  # a known index hybrid: repair DocEX's indexes, prove equality, stamp
    REFUSE = "refuse"  # anything else: refused with a diff, untouched
    UNKNOWN = "unknown"  # status only: recognition was not possible (no snapshots, no CREATE)

    def __str__(self) -> str:
        return self.value


def no_snapshots(settings: Settings) -> str:
    """Why a tenant cannot be recognised: no snapshots, and no CREATE to compute them."""
    return (
        "recognition needs CREATE: this chain ships no snapshots for this backend and the role may not "
        f"create a scratch schema (run `{command(settings, 'check', '--update-manifest')}`, or grant CREATE)"
    )


@dataclass
class Recognition:
    action: Decision
    revision: str | None = None  # the revision to stamp
    repairs: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)  # (verb, table, index)
    diff: list[str] = field(default_factory=list)

    @property
    def matched(self) -> str | None:
        """The revision the tenant matches (as is, or after index repairs); None when refused."""
        return None if self.action == Decision.REFUSE else self.revision

    @property
    def nearest(self) -> str | None:
        """Refused: the revision it differs least from (its diff is against that one)."""
        return self.revision if self.action == Decision.REFUSE else None

    def describe_repairs(self) -> list[str]:
        out = []
        for verb, table, index in self.repairs:
            assert index is not None
            if "definition" in index:  # more than columns: what makes it that index (a predicate, an expression...)
                out.append(f"{verb} index {index['name']} on {table} {index['definition']}")
                continue
            cols = ", ".join(f"{c} DESC" if order == "desc" else c for c, order in index["columns"])
            out.append(f"{verb} index {index['name']} on {table}({cols})")
        return out


def tables_only(snap: Snapshot) -> Snapshot:
    stripped = copy.deepcopy(snap)
    for table in stripped["tables"].values():
        table.pop("indexes")
    return stripped


def indexes_of(snap: Snapshot) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (table, name): {"name": name, **definition}
        for table, body in snap["tables"].items()
        for name, definition in body["indexes"].items()
    }


def recognise(tenant: Snapshot, snaps: dict[str, Snapshot], order: list[str]) -> Recognition:
    """Which revision an unversioned tenant is, and what (if anything) must be repaired."""
    for revision in reversed(order):
        if snaps[revision] == tenant:
            return Recognition(Decision.ADOPT, revision)
    known_names = {name for snap in snaps.values() for (_, name) in indexes_of(snap)}
    structure = tables_only(tenant)
    actual = indexes_of(tenant)
    best: Recognition | None = None
    for revision in reversed(order):
        if tables_only(snaps[revision]) != structure:
            continue
        expected = indexes_of(snaps[revision])
        unknown = [
            f"extra index {name} on {table} (not one DocEX defines)"
            for (table, name) in actual.keys() - expected.keys()
            if name not in known_names
        ]
        if unknown:
            return Recognition(Decision.REFUSE, revision, diff=sorted(unknown))
        repairs = index_repairs(snaps[revision], tenant) or []
        if best is None or len(repairs) < len(best.repairs):
            best = Recognition(Decision.REPAIR, revision, repairs)
    if best is not None:
        return best
    nearest = min(reversed(order), key=lambda r: len(differences(snaps[r], tenant)))
    return Recognition(Decision.REFUSE, nearest, diff=differences(snaps[nearest], tenant))


Repair = tuple[str, str, "dict[str, Any] | None"]  # (drop or create, table, index)


def index_repairs(expected: Snapshot, actual: Snapshot) -> list[Repair] | None:
    """The index drops and creates that turn ``actual`` into ``expected``, when the tables (and
    enum types and sequences) are exactly the revision's and only indexes differ; else None.
    Indexes hold no data, so these are safe. (adopt refuses an index DocEX never defined;
    verify --repair drops an operator's own index too: the tenant is stamped at the revision.)"""
    if tables_only(expected) != tables_only(actual):
        return None
    want, have = indexes_of(expected), indexes_of(actual)
    repairs: list[Repair] = [("drop", key[0], have[key]) for key in sorted(have.keys() - want.keys())]
    for key in sorted(want.keys() & have.keys()):
        if want[key] != have[key]:
            repairs += [("drop", key[0], have[key]), ("create", key[0], want[key])]
    repairs += [("create", key[0], want[key]) for key in sorted(want.keys() - have.keys())]
    return repairs


def apply_repairs(connection: Connection, recognition: Recognition) -> None:
    """Create and drop DocEX's own indexes, unqualified: the tenant's search_path decides where.
    An index is created from the snapshot's definition of it, so exactly (predicate, expressions,
    INCLUDE, collations and all: see backends/catalog.py)."""
    quote = connection.dialect.identifier_preparer.quote
    for verb, table, index in recognition.repairs:
        assert index is not None
        log.info("adopt: %s index %s on %s", verb, index["name"], table)
        if verb == "drop":
            connection.exec_driver_sql(f"DROP INDEX {quote(index['name'])}")
        else:
            # no_parameters: the driver gets the statement as it is, so a "%" in a predicate is no placeholder
            statement = create_index(connection, table, index["name"], index)
            connection.exec_driver_sql(statement, execution_options={"no_parameters": True})


def tenant_snapshot(backend: Backend, tenant_id: str, connection: Connection | None = None) -> Snapshot:
    if connection is not None:
        return snapshot(connection, backend.schema(tenant_id))
    return namespace_snapshot(backend, tenant_id)


def recognise_tenant(settings: Settings, backend: Backend, chain: Chain, tenant_id: str) -> Recognition:
    snaps = revision_snapshots.for_chain(settings, chain)
    if snaps is None:
        raise RecognitionError(no_snapshots(settings))
    return recognise(tenant_snapshot(backend, tenant_id), snaps, chain.order)


def with_recognition(settings: Settings, backend: Backend, chain: Chain, row: TenantStatus) -> TenantStatus:
    """An unversioned tenant's status row, with the revision adopt would stamp. Read-only:
    without the chain's snapshots for this backend (see revision_snapshots.py) it says so."""
    snaps = revision_snapshots.for_chain(settings, chain)
    if snaps is None:
        return replace(row, adopt=Decision.UNKNOWN.value, error=no_snapshots(settings))
    try:
        tenant = tenant_snapshot(backend, row.tenant_id)
    except sa.exc.SQLAlchemyError as exc:
        return replace(row, state=State.UNREADABLE, error=f"cannot read its catalog: {describe_error(exc)}")
    recognition = recognise(tenant, snaps, chain.order)
    return replace(row, matches=recognition.matched, nearest=recognition.nearest, adopt=recognition.action.value)


def adopt(
    inv: Invocation,
    tenant_ids: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    on_result: Callable[[TenantResult], None] | None = None,
) -> list[TenantResult]:
    """Stamp tenants that DocEX created itself at the revision they are.

    A tenant already versioned is reported and left alone; one that matches nothing is refused
    with the diff and left untouched. ``dry_run`` decides and reports, changing nothing.
    ``on_result`` is told of each tenant's result as it is decided (the run ledger records it).

    A signal (the command line's Interrupted) stops the run: during a tenant's adoption, its
    transaction rolls back; once a stamp starts to commit (interrupts.hold), after that tenant
    is told to ``on_result`` and before the next one. The tenants not adopted then are told as
    not-run, saying why, and Interrupted carries every tenant's result. A signal after the
    last tenant committed stops nothing: the hold goes on (the caller asks interrupts.noted,
    or ends it with interrupts.raise_held)."""
    tell = on_result or (lambda result: None)
    results: list[TenantResult] = []
    namespaces = select(inv.backend, tenant_ids)
    states = inv.backend.read_states(namespaces)
    items = list(namespaces.items())
    for i, (tenant_id, namespace) in enumerate(items):
        started = False
        try:
            interrupts.raise_held()  # a signal after the previous tenant committed stops the run here
            started = True
            result = adopt_one(inv.settings, inv.backend, inv.chain, tenant_id, namespace, states[tenant_id], dry_run=dry_run)
        except Interrupted as stop:  # the tenant in flight rolled back on the way out
            interrupts.hold()  # what follows is bookkeeping: recorded and printed whole
            for j, (left_id, left_namespace) in enumerate(items[i:]):
                revision = state_of(inv.chain, states[left_id])[0]
                why = _not_adopted(stop, in_flight=started and j == 0)
                results.append(TenantResult(left_id, left_namespace, Action.NOT_RUN, revision, revision, why))
                tell(results[-1])
            raise Interrupted(stop.signum, results=results) from None
        interrupts.hold()  # its outcome is decided (committed, or rolled back): recorded whole
        results.append(result)
        tell(result)
    return results


def _not_adopted(stop: Interrupted, *, in_flight: bool) -> str:
    if in_flight:
        return f"interrupted by {stop.signal_name} while it was being adopted: rolled back, nothing changed"
    return f"not adopted: interrupted by {stop.signal_name} before its turn"


def statuses(inv: Invocation, tenant_ids: Sequence[str] | None) -> list[TenantStatus]:
    """Every selected tenant's revision and state, read in bulk without Alembic, with the
    revision adopt would stamp for the unversioned ones that have tables; creates nothing."""
    namespaces = in_shard(select(inv.backend, tenant_ids or None), inv.shard)
    states = inv.backend.read_states(namespaces)
    rows = []
    for tenant_id, namespace in namespaces.items():
        revision, state = state_of(inv.chain, states[tenant_id])
        row = TenantStatus(tenant_id, namespace, revision, state, error=states[tenant_id].error)
        if state == State.UNVERSIONED and states[tenant_id].table_count:
            row = with_recognition(inv.settings, inv.backend, inv.chain, row)
        rows.append(row)
    return rows


def adopt_one(
    settings: Settings,
    backend: Backend,
    chain: Chain,
    tenant_id: str,
    namespace: str,
    state: NamespaceState,
    *,
    dry_run: bool,
) -> TenantResult:
    revision, kind = state_of(chain, state)
    result = TenantResult(tenant_id, namespace, Action.SKIPPED, revision, revision)
    if kind == State.MISSING:
        result.action, result.message = Action.FAILED, "does not exist"
    elif kind in NEEDS_A_PERSON:
        result.action, result.message = Action.FAILED, why_not_migratable(state)
    elif kind != State.UNVERSIONED:
        result.message = f"already versioned at {revision or 'base'}: left alone"
    elif not state.table_count:
        result.message = f"empty: nothing to adopt (run `{command(settings, 'provision', tenant_id, '--exist-ok')}`)"
    else:
        _adopt_recognised(settings, backend, chain, result, dry_run=dry_run)
    return result


def _adopt_recognised(settings: Settings, backend: Backend, chain: Chain, result: TenantResult, *, dry_run: bool) -> None:
    try:
        recognition = recognise_tenant(settings, backend, chain, result.tenant_id)
    except (RecognitionError, sa.exc.SQLAlchemyError) as exc:
        result.action, result.message = Action.FAILED, f"cannot recognise it: {describe_error(exc)}"
        return
    result.to_revision = recognition.matched  # refused: still unversioned, at no revision
    if recognition.action == Decision.REFUSE:
        result.action = Action.FAILED
        result.message = f"matches no revision (nearest: {recognition.revision}); refused, nothing changed"
        result.details = recognition.diff
        return
    result.details = recognition.describe_repairs()
    repaired = f" after {len(recognition.repairs)} index repair(s)" if recognition.repairs else ""
    if dry_run:
        result.action, result.message = Action.WOULD_ADOPT, f"would be stamped at {recognition.revision}{repaired}"
        return
    try:
        _stamp_repaired(settings, backend, chain, result.tenant_id, recognition)
    except Exception as exc:  # a refused connection too: the tenants adopted so far stay reported
        result.action, result.message = Action.FAILED, describe_error(exc)
        return
    result.action, result.message = Action.ADOPTED, f"stamped at {recognition.revision}{repaired}"


def _stamp_repaired(settings: Settings, backend: Backend, chain: Chain, tenant_id: str, recognition: Recognition) -> None:
    """Repair, prove the tenant equals the revision, and stamp it: one transaction, under its lock."""
    assert recognition.revision is not None
    snaps = revision_snapshots.for_chain(settings, chain)
    assert snaps is not None  # recognition needed them
    expected = snaps[recognition.revision]

    def repair_and_prove(connection: Connection) -> None:
        apply_repairs(connection, recognition)
        left = differences(expected, tenant_snapshot(backend, tenant_id, connection))
        if left:  # never stamp what is not exactly the revision; the transaction rolls back
            raise RecognitionError(f"after repair the tenant still differs from {recognition.revision}: {left[0]}")
        interrupts.hold()  # the stamp and its commit come next: a signal from here on stops the run after it

    stamp_tenant(backend, tenant_id, recognition.revision, repair_and_prove)

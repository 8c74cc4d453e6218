"""The `data` check: every revision upgrades and downgrades a tenant that holds rows, and a round
trip (upgrade, then downgrade) gives back every row it started with.

The other database checks migrate empty tenants, where a unique index over duplicates, a copy
that violates a primary key or a NOT NULL without a backfill all succeed. Here one scratch tenant
walks the chain; before each revision every table gets more representative rows
generated from the tenant's schema as it is then (check_rows.py: every column's type, NULLs
where nullable, duplicates where no key forbids them, foreign keys pointing at real parent rows),
beside the rows kept from earlier revisions; the tables a revision creates are filled before its
downgrade runs.

A revision whose round trip loses or changes rows (a lossy data migration, a dropped table with
rows) fails unless it declares so at module level: ``destructive = "why the data may go"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sized

from . import check_rows as rows
from .backends import Backend, open_backend
from .checks import CheckFailed, Context
from .config import Settings
from .results import describe_error
from .runner import migrate_tenant

TENANT = "data"  # the scratch tenant; "data_1", "data_2"... when one cannot go on (see below)
MAX_EXAMPLES = 3


def destructive_reason(ctx: Context, revision: str) -> str | None:
    """The revision's ``destructive`` declaration; CheckFailed when it gives no reason."""
    declared = getattr(ctx.chain.script.get_revision(revision).module, "destructive", None)
    if declared is None:
        return None
    if not isinstance(declared, str) or not declared.strip():
        raise CheckFailed(f'{revision}: destructive must say why the data may go: destructive = "why"', [repr(declared)])
    return declared


def lost_rows(before: rows.TableRows, after: rows.TableRows) -> list[str]:
    """Per table, the rows present before a round trip and not after (or changed), with examples."""
    evidence = []
    for table in sorted(before):
        missing = Counter(before[table]) - Counter(after.get(table, []))
        if not missing:
            continue
        if table not in after:
            evidence.append(f"table {table}: {len(before[table])} row(s) before the round trip, the table is gone after it")
            continue
        count = sum(missing.values())
        evidence.append(f"table {table}: {count} of {len(before[table])} row(s) lost or changed by the round trip")
        evidence += [f"  before: {row}" for row in sorted(missing)[:MAX_EXAMPLES]]
        changed = Counter(after[table]) - Counter(before[table])
        evidence += [f"  after:  {row}" for row in sorted(changed)[:MAX_EXAMPLES]]
    return evidence


def _step(
    backend: Backend,
    ctx: Context,
    tenant_id: str,
    target: str | None,
    what: str,
    held: Mapping[str, Sized | int],
    *,
    downgrade: bool = False,
) -> None:
    """One migration of the scratch tenant; CheckFailed, naming the rows it held, if it fails."""
    try:
        migrate_tenant(backend, tenant_id, target, downgrade=downgrade, chain=ctx.chain)
    except Exception as exc:
        counts = {t: n if isinstance(n, int) else len(n) for t, n in held.items()}
        held_rows = ", ".join(f"{t}: {n}" for t, n in sorted(counts.items()) if n) or "none"
        raise CheckFailed(
            f"{what} fails on a tenant with rows", [describe_error(exc), f"rows in the tenant: {held_rows}"]
        ) from None


def _fill(backend: Backend, tenant_id: str, unfilled: set[str], *, first: int, only_empty: bool) -> None:
    counts = rows.counts(backend, tenant_id)
    if not counts or (only_empty and all(counts.values())):
        return  # reflecting is the slow part: not when there is nothing to fill
    tables = rows.reflect(backend, tenant_id)
    unfilled |= {t for t, n in rows.fill(backend, tenant_id, tables, first=first, only_empty=only_empty).items() if not n}


def check_data(ctx: Context, scratch: Settings) -> str:
    declared: list[str] = []
    unfilled: set[str] = set()
    previous: str | None = None
    tenant, fresh = TENANT, 0
    with open_backend(scratch) as backend:
        migrate_tenant(backend, tenant, None, create=True, chain=ctx.chain)
        for step, revision in enumerate(ctx.chain.order):
            reason = destructive_reason(ctx, revision)
            first = step * rows.ROWS * 2  # two batches per revision at most
            # Rows generated from the schema as it is at the previous revision, beside those kept
            # from earlier ones: each column that revision has, with values of its type.
            _fill(backend, tenant, unfilled, first=first, only_empty=False)
            before = rows.read(backend, tenant)
            _step(backend, ctx, tenant, revision, f"the upgrade to {revision}", before)
            _fill(backend, tenant, unfilled, first=first + rows.ROWS, only_empty=True)  # the tables it created
            counts = rows.counts(backend, tenant)
            _step(backend, ctx, tenant, previous, f"the downgrade of {revision}", counts, downgrade=True)
            lost = lost_rows(before, rows.read(backend, tenant))
            if lost and reason is None:
                raise CheckFailed(
                    f"the round trip of {revision} (upgrade, downgrade) loses rows: "
                    'if it must, declare it in the revision: destructive = "why"',
                    lost,
                )
            if lost:
                declared.append(revision)
            try:
                migrate_tenant(backend, tenant, revision, chain=ctx.chain)
            except Exception:
                # Its downgrade left something behind that its upgrade trips over: that is
                # downgrade-leaves-no-trace's finding. Go on with a new tenant at this revision.
                fresh += 1
                tenant = f"{TENANT}_{fresh}"
                migrate_tenant(backend, tenant, revision, create=True, chain=ctx.chain)
            previous = revision
    tail = f"; rows lost as declared (destructive) by {', '.join(declared)}" if declared else ""
    tail += f"; tables the generator could not fill: {', '.join(sorted(unfilled))}" if unfilled else ""
    return f"{len(ctx.chain.order)} revisions upgrade and downgrade over rows in every table, losing none{tail}"

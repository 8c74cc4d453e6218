"""The `data` check: every revision upgrades and downgrades a tenant that holds rows, and a round
trip (upgrade, then downgrade) gives back every row it started with.

The other database checks migrate empty tenants, where a unique index over duplicates, a copy
that violates a primary key or a NOT NULL without a backfill all succeed. Here one scratch tenant
walks the chain; before each revision every empty table is filled with representative rows
generated from the tenant's schema as it is then (rows.py: every column's type, NULLs where
nullable, duplicates where no key forbids them, foreign keys pointing at real parent rows).

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

TENANT = "data"
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
    backend: Backend, ctx: Context, target: str | None, what: str, held: Mapping[str, Sized | int], *, downgrade: bool = False
) -> None:
    """One migration of the scratch tenant; CheckFailed, naming the rows it held, if it fails."""
    try:
        migrate_tenant(backend, TENANT, target, downgrade=downgrade, chain=ctx.chain)
    except Exception as exc:
        counts = {t: n if isinstance(n, int) else len(n) for t, n in held.items()}
        held_rows = ", ".join(f"{t}: {n}" for t, n in sorted(counts.items()) if n) or "none"
        raise CheckFailed(
            f"{what} fails on a tenant with rows", [describe_error(exc), f"rows in the tenant: {held_rows}"]
        ) from None


def check_data(ctx: Context, scratch: Settings) -> str:
    declared, unfilled = [], set()
    previous: str | None = None
    with open_backend(scratch) as backend:
        migrate_tenant(backend, TENANT, None, create=True, chain=ctx.chain)
        for revision in ctx.chain.order:  # the tenant is at the previous revision, every table filled
            reason = destructive_reason(ctx, revision)
            before = rows.read(backend, TENANT)
            _step(backend, ctx, revision, f"the upgrade to {revision}", before)
            counts = rows.counts(backend, TENANT)
            # Reflecting is the slow part: only when the revision left a table empty (it created one).
            tables = rows.reflect(backend, TENANT) if not all(counts.values()) else []
            if tables:
                counts = rows.fill_empty_tables(backend, TENANT, tables)
                unfilled |= {t for t, n in counts.items() if not n}
            _step(backend, ctx, previous, f"the downgrade of {revision}", counts, downgrade=True)
            lost = lost_rows(before, rows.read(backend, TENANT))
            if lost and reason is None:
                raise CheckFailed(
                    f"the round trip of {revision} (upgrade, downgrade) loses rows: "
                    'if it must, declare it in the revision: destructive = "why"',
                    lost,
                )
            if lost:
                declared.append(revision)
            _step(backend, ctx, revision, f"the upgrade to {revision} after its own downgrade", before)
            if tables:
                rows.fill_empty_tables(backend, TENANT, tables)  # the tables it created are empty again
            previous = revision
    tail = f"; rows lost as declared (destructive) by {', '.join(declared)}" if declared else ""
    tail += f"; tables the generator could not fill: {', '.join(sorted(unfilled))}" if unfilled else ""
    return f"{len(ctx.chain.order)} revisions upgrade and downgrade over rows in every table, losing none{tail}"

"""The `replayable` check: a revision gives every tenant the same result, unless it declares
``replayable = False``.

Fresh tenants get what the chain produced once (fresh.py) whenever every revision is replayable,
so a revision that reads the tenant id (``config.attributes["tenant_id"]``), the clock or random
numbers without saying so hands one tenant's values to the others. Two scratch tenants with
different ids are migrated to head and their catalogs and every row compared; when they differ,
two more take each revision in turn, compared after each to name the revision responsible,
with each tenant's own namespace name (schema or file path) written as ``{namespace}``, the one
place a tenant's id legitimately appears. A difference a revision makes fails it unless it
declares ``replayable = False``; the same comparison catches names made at random (an index
named with a uuid).

Limits: a difference one revision makes and a later one removes is not seen; only what differs between two runs a moment apart is seen (a clock read at one-second
resolution may match), and a revision that reads the tenant id but ends up writing the same
thing for both passes, rightly.
"""

from __future__ import annotations

import json
from typing import Any

from . import check_rows as rows
from .backends import Backend, open_backend
from .checks import CheckFailed, Context
from .config import Settings
from .runner import migrate_tenant
from .scratch import namespace_snapshot
from .snapshot import differences

TENANTS = ("replay_first", "replay_second")
NAMESPACE = "{namespace}"


def declared_not_replayable(ctx: Context, revision: str) -> bool:
    return getattr(ctx.chain.script.get_revision(revision).module, "replayable", True) is False


def picture(backend: Backend, tenant_id: str) -> Any:
    """The tenant's catalog and rows, its namespace name replaced by a placeholder."""
    found = {"catalog": namespace_snapshot(backend, tenant_id), "rows": rows.read(backend, tenant_id)}
    text = json.dumps(found, sort_keys=True, default=str)
    for name in {backend.namespace(tenant_id), backend.schema(tenant_id)} - {None, ""}:
        assert name is not None
        text = text.replace(json.dumps(name)[1:-1], NAMESPACE)
    return json.loads(text)


def _where(line: str) -> str:
    """The place a differences() line names (what differs there changes as later revisions run)."""
    for prefix in ("missing ", "extra "):
        if line.startswith(prefix):
            return line[len(prefix) :].split(": ", 1)[0]
    return line.split(": expected ", 1)[0]


def _differences_by_revision(ctx: Context, backend: Backend) -> dict[str, list[str]]:
    """The differences each revision makes between the two tenants, taking them one revision
    at a time (reading catalogs is slow: done only when the heads differ)."""
    explained: set[str] = set()  # places an earlier revision made differ (each is reported once)
    found: dict[str, list[str]] = {}
    for tenant_id in TENANTS:
        migrate_tenant(backend, f"{tenant_id}_step", None, create=True, chain=ctx.chain)
    for revision in ctx.chain.order:
        for tenant_id in TENANTS:
            migrate_tenant(backend, f"{tenant_id}_step", revision, chain=ctx.chain)
        first, second = (picture(backend, f"{t}_step") for t in TENANTS)
        new = [line for line in differences(first, second) if _where(line) not in explained]
        explained.update(_where(line) for line in new)
        if new:
            found[revision] = new
    return found


def check_replayable(ctx: Context, scratch: Settings) -> str:
    with open_backend(scratch) as backend:
        for tenant_id in TENANTS:
            migrate_tenant(backend, tenant_id, ctx.chain.head, create=True, chain=ctx.chain)
        first, second = (picture(backend, t) for t in TENANTS)
        found = _differences_by_revision(ctx, backend) if differences(first, second) else {}
    declared = [r for r in found if declared_not_replayable(ctx, r)]
    undeclared = [r for r in found if r not in declared]
    if undeclared:
        raise CheckFailed(
            f"{', '.join(undeclared)} give two tenants different results: a revision that reads the tenant id, "
            "the clock or random numbers must set replayable = False at module level (and none may name objects at random)",
            [f"{r}: {TENANTS[1]} vs {TENANTS[0]}: {line}" for r in undeclared for line in found[r]],
        )
    tail = f"; differing as declared (replayable = False): {', '.join(declared)}" if declared else ""
    return f"two tenants with different ids get the same catalog and rows from the {len(ctx.chain.order)} revisions{tail}"

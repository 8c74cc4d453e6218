"""SQL for review (`upgrade --sql`): per tenant, the exact script that takes it from its current
revision to the target, written to files and never run.

PostgreSQL: each step is rendered with Alembic's offline mode (runner.render_offline). SQLite:
a batch rebuild needs each table as it is at that moment, which offline rendering cannot know
(a revision may drop an index just before), so an exact copy of the tenant file
(Backend.review_shadow) is migrated for real and the statements it was sent are the script. The backend wraps the steps in the tenant's own
transaction with the lock, scope and timeouts the tool itself takes, and a guard that stops a
script whose tenant has moved since it was rendered (Backend.review_script).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import Backend
from .chain import VERSION_TABLE, Chain
from .errors import DocexMigrateError
from .invocation import Invocation
from .results import Action, TenantResult
from .runner import record_migration, render_offline
from .selection import in_shard, select
from .states import plan, state_of

COMBINED = "_all-tenants.sql"  # a tenant id starts with a letter or digit: never a tenant's file


@dataclass(frozen=True)
class Review:
    results: list[TenantResult]  # one per tenant: scripted tenants carry their file in the message
    files: list[Path]
    combined: Path | None = None  # every tenant's script in one (where one session reaches them all)


def write_scripts(inv: Invocation, tenant_ids: Sequence[str] | None, revision: str, output: Path) -> Review:
    """One script per tenant that needs one into ``output`` (and, where one session reaches
    every tenant, one combined script); tenants with nothing to do, or refused, are reported as
    ``upgrade`` would report them. Nothing is migrated."""
    chain, backend = inv.chain, inv.backend
    target = chain.resolve(revision)
    namespaces = in_shard(select(backend, tenant_ids), inv.shard)
    states = backend.read_states(namespaces)
    results: list[TenantResult] = []
    scripts: list[str] = []
    files: list[Path] = []
    for tenant_id, namespace in namespaces.items():
        planned = plan(chain, tenant_id, namespace, states[tenant_id], target, downgrade=False, settings=inv.settings)
        if planned is not None:
            results.append(planned)
            continue
        current = state_of(chain, states[tenant_id])[0]
        steps = _steps(backend, tenant_id, chain, current, target)
        path = output / f"{tenant_id}.sql"
        script = backend.review_script(tenant_id, current, steps, versioned=states[tenant_id].versioned, path=path)
        output.mkdir(parents=True, exist_ok=True)
        path.write_text(script, encoding="utf-8")
        scripts.append(script)
        files.append(path)
        message = f"script to {target} written: {path} (not run)"
        results.append(TenantResult(tenant_id, namespace, Action.SCRIPTED, current, current, message))
    combined = backend.combined_script(scripts) if scripts else None
    if combined is None:
        return Review(results, files)
    files.append(output / COMBINED)
    files[-1].write_text(combined, encoding="utf-8")
    return Review(results, files, files[-1])


def _steps(backend: Backend, tenant_id: str, chain: Chain, current: str | None, target: str | None) -> str:
    with backend.review_shadow(tenant_id) as shadow:
        if shadow is not None:  # the statements the migration sends to an exact copy of the tenant
            return "\n".join(
                literal_statement(sql, params) + ";" for sql, params in record_migration(shadow, tenant_id, chain, target)
            )
    order = chain.order
    bodies = []
    for index in range(chain.position(current) + 1, chain.position(target) + 1):
        down = order[index - 1] if index else None
        bodies.append(_without_transaction(render_offline(order[index], down, dialect=backend.kind)))
    # From base Alembic's offline SQL always creates the version table, but a tenant downgraded
    # to base still has it, empty (the guard tells which state the script is for).
    return "\n".join(bodies).replace(f"CREATE TABLE {VERSION_TABLE} (", f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (", 1)


def literal_statement(sql: str, parameters: Any) -> str:
    """A recorded statement with its parameters written in as SQL literals (strings, numbers,
    booleans, bytes, NULL: what a migration's own statements bind, e.g. the version update)."""
    values = list(parameters or ())
    if not values:
        return sql
    parts = sql.split("?")
    if len(parts) != len(values) + 1:
        raise DocexMigrateError(f"cannot write a recorded statement as a script: {sql[:80]!r}")
    out = [parts[0]]
    for value, rest in zip(values, parts[1:], strict=True):
        if value is None:
            literal = "NULL"
        elif isinstance(value, bool):  # bound as 1 or 0, not as the text 'True'
            literal = str(int(value))
        elif isinstance(value, (int, float)):
            literal = repr(value)
        elif isinstance(value, bytes):
            literal = f"X'{value.hex()}'"
        else:
            literal = "'" + str(value).replace("'", "''") + "'"
        out += [literal, rest]
    return "".join(out)


def _without_transaction(sql: str) -> str:
    """Alembic's offline SQL opens and commits its own transaction: the tenant's script has one."""
    return "\n".join(line for line in sql.splitlines() if line.strip() not in ("BEGIN;", "BEGIN TRANSACTION;", "COMMIT;"))

"""Provisioning: new tenants at head (fresh ones from what the chain produced, see fresh.py),
planned here and run through migration.py's loop, and the proof that they work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa

from . import fresh
from . import schema as tenant_schema
from .advice import command
from .backends import Backend, NamespaceState
from .chain import Chain
from .config import ROW_LEVEL, Settings
from .errors import ConfigError, DocexMigrateError, Interrupted, UsageError
from .executors import WorkItem
from .invocation import Invocation
from .migration import Plan, execute_plan
from .results import Action, TenantResult, describe_error
from .runner import rolled_back
from .selection import validated
from .states import NEEDS_A_PERSON, plan, state_of, why_not_migratable


def provision(
    inv: Invocation, tenant_ids: Sequence[str], *, verify: bool = False, exist_ok: bool = False, replay: bool = True
) -> list[TenantResult]:
    """Create each tenant's namespace and upgrade it to head, in one transaction per tenant:
    the plan -> execute loop of migration.py, with a create flag on each WorkItem.

    A fresh namespace gets what the chain produces, copied or replayed (``replay``, see
    fresh.py) instead of a full Alembic run: the same result, without Alembic's cost per tenant.

    An existing tenant is a failure ("already exists") unless ``exist_ok``, when it is brought
    to head instead. ``verify`` then proves each tenant works and leaves no trace.
    """
    if inv.settings.multi_tenancy_model == ROW_LEVEL:
        raise ConfigError(
            f"security.multi_tenancy_model is 'row_level' in {inv.settings.describe_source()}: per-tenant databases "
            "need 'database_level'; rerun with --enable-multi-tenancy to set it"
        )
    if not tenant_ids:
        raise UsageError("name at least one tenant to provision")
    chain, backend = inv.chain, inv.backend
    planned = Plan(chain.head, validated(backend, tenant_ids))
    states = backend.read_states(planned.namespaces)
    for tenant_id, namespace in planned.namespaces.items():
        state = states[tenant_id]
        refused = _refusal(inv.settings, chain, tenant_id, namespace, state, exist_ok=exist_ok)
        if refused is not None:
            planned.finished[tenant_id] = refused
            continue
        planned.work.append(
            WorkItem(
                tenant_id,
                namespace,
                state_of(chain, state)[0],
                chain.head,
                create=True,
                action=Action.UPGRADED if state.versioned else Action.PROVISIONED,
                fresh=not state.versioned and not state.table_count,
                versioned=state.versioned,
                identity=state.identity,
            )
        )
    fresh_tenants = sum(i.fresh for i in planned.work)
    template = (
        fresh.template(inv.settings, chain, fresh_tenants, backend) if replay and fresh_tenants and not inv.plan_only else None
    )
    try:
        results = execute_plan(inv, planned, template=template)
    except Interrupted as stop:
        _with_warnings(backend, stop.results or [])
        raise
    for result in _with_warnings(backend, results):
        if verify and not result.failed and not inv.plan_only:
            _verified(backend, result)
    return results


def _with_warnings(backend: Backend, results: list[TenantResult]) -> list[TenantResult]:
    for result in results:
        result.warnings.extend(backend.warnings_for(result.tenant_id))
    return results


def _refusal(
    settings: Settings, chain: Chain, tenant_id: str, namespace: str, state: NamespaceState, *, exist_ok: bool
) -> TenantResult | None:
    """A finished result for a tenant provision must not touch (or has nothing to do for)."""
    revision, kind = state_of(chain, state)
    if kind in NEEDS_A_PERSON:
        return TenantResult(tenant_id, namespace, Action.FAILED, revision, revision, why_not_migratable(state))
    if state.versioned and not exist_ok:
        return TenantResult(
            tenant_id,
            namespace,
            Action.FAILED,
            revision,
            revision,
            f"already exists at revision {revision or 'base'}: use `{command(settings, 'upgrade', '--tenant', tenant_id)}`, "
            "or pass --exist-ok",
        )
    return plan(chain, tenant_id, namespace, state, chain.head, downgrade=False, settings=settings) if state.exists else None


def _verified(backend: Backend, result: TenantResult) -> None:
    problems = verify_tenant(backend, result.tenant_id)
    if problems:
        done, result.action = result.action, Action.FAILED
        result.message = f"{done} but verification failed: " + "; ".join(problems)
    else:
        result.message = (result.message + "; " if result.message else "") + "verified"


def verify_tenant(backend: Backend, tenant_id: str) -> list[str]:
    """Prove a tenant works: every expected table and index is there, and a basket row can be
    written and read back. Runs in a transaction that is rolled back, so it leaves no trace."""
    problems: list[str] = []
    try:
        with rolled_back(lambda: backend.transaction(tenant_id, create=False)) as connection:
            inspector = sa.inspect(connection)
            schema = backend.schema(tenant_id)
            tables = set(inspector.get_table_names(schema=schema))
            problems += [f"table {t} is missing" for t in tenant_schema.TABLE_NAMES if t not in tables]
            indexes = {
                ix["name"] for t in tables & set(tenant_schema.TABLE_NAMES) for ix in inspector.get_indexes(t, schema=schema)
            }
            problems += [f"index {i} is missing" for i in tenant_schema.INDEX_NAMES if i not in indexes]
            if not problems and not _basket_round_trip(connection):
                problems.append("a basket row written could not be read back")
    except DocexMigrateError as exc:
        problems.append(str(exc))
    except sa.exc.SQLAlchemyError as exc:
        problems.append(describe_error(exc))
    return problems


def _basket_round_trip(connection: sa.Connection) -> bool:
    basket_id = f"bas_{uuid.uuid4().hex}"  # DocEX ids: prefix + uuid hex, 36 chars
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    basket = tenant_schema.docbasket
    connection.execute(
        basket.insert().values(
            id=basket_id,
            name=basket_id,
            storage_config={"type": "filesystem"},
            status="active",
            created_at=now,
            updated_at=now,
        )
    )
    return connection.execute(sa.select(basket.c.name).where(basket.c.id == basket_id)).scalar() == basket_id

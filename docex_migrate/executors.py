"""Scheduling tenants: one after another, or on a pool of processes. Never raises for one
tenant's failure: each tenant's outcome comes back as a TenantResult, in order of completion.

Processes, not threads: Alembic's ``context`` and ``op`` are process globals. Workers are
spawned (no state inherited from the parent), each builds its backend once and holds at most
one connection at a time (a tenant's own), and takes the next tenant as soon as it is free, so
one slow tenant never holds up a batch of others.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

from .backends import Backend, FreshTemplate, backend_for
from .config import Settings
from .errors import DatabaseUnavailableError
from .results import ALREADY_AT_TARGET, Action, TenantResult, describe_error
from .runner import migrate_tenant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkItem:
    """One tenant that needs Alembic, as decided from the bulk read of the fleet."""

    tenant_id: str
    namespace: str
    revision: str | None  # where the bulk read found it
    target: str | None
    downgrade: bool = False
    create: bool = False
    action: Action | None = None  # what success is called (default: upgraded or downgraded)
    fresh: bool = False  # an empty namespace going to head: a recording of the chain may be replayed
    versioned: bool = False  # the bulk read saw its alembic_version: read the revision directly


def _migrate(backend: Backend, item: WorkItem, template: FreshTemplate | None) -> tuple[str | None, str | None]:
    if item.fresh and template is not None and item.target and backend.install_fresh(item.tenant_id, template, item.target):
        return None, item.target
    return migrate_tenant(
        backend, item.tenant_id, item.target, downgrade=item.downgrade, create=item.create, versioned=item.versioned
    )


def run_item(backend: Backend, item: WorkItem, template: FreshTemplate | None = None) -> TenantResult:
    action = item.action or (Action.DOWNGRADED if item.downgrade else Action.UPGRADED)
    result = TenantResult(item.tenant_id, item.namespace, action, item.revision, item.target)
    try:
        result.from_revision, result.to_revision = _migrate(backend, item, template)
    except DatabaseUnavailableError:
        raise  # the database itself is unusable: no point trying the next tenant
    except Exception as exc:  # one tenant's failure is a value; the loop goes on
        log.debug("tenant %s failed", item.tenant_id, exc_info=True)
        result.action, result.to_revision, result.message = Action.FAILED, item.revision, describe_error(exc)
        return result
    if result.from_revision == result.to_revision:  # read after the lock: nothing was left to do
        result.action, result.message = Action.SKIPPED, f"{ALREADY_AT_TARGET} (another run got there first)"
    return result


def not_run(item: WorkItem, failures: int) -> TenantResult:
    return TenantResult(item.tenant_id, item.namespace, Action.NOT_RUN, item.revision, item.revision,
                        f"not attempted: stopped after {failures} failure(s)")


def run_serial(
    backend: Backend, items: Iterable[WorkItem], max_failures: int | None, template: FreshTemplate | None = None
) -> Iterator[TenantResult]:
    failures = 0
    for item in items:
        if max_failures is not None and failures >= max_failures:
            yield not_run(item, failures)
            continue
        result = run_item(backend, item, template)
        failures += result.failed
        yield result


_worker_backend: Backend | None = None
_worker_template: FreshTemplate | None = None


def _start_worker(settings: Settings, template: FreshTemplate | None) -> None:
    global _worker_backend, _worker_template
    _worker_backend, _worker_template = backend_for(settings), template


def _work(item: WorkItem) -> TenantResult:
    assert _worker_backend is not None
    return run_item(_worker_backend, item, _worker_template)


def run_parallel(
    settings: Settings, items: list[WorkItem], jobs: int, max_failures: int | None, template: FreshTemplate | None = None
) -> Iterator[TenantResult]:
    """``jobs`` processes; at most ``jobs`` tenants in flight, handed out one at a time."""
    failures = 0
    queue = iter(items)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_worker, initargs=(settings, template)) as pool:
        running: dict[Future, WorkItem] = {}

        def refill() -> None:
            while len(running) < jobs and (max_failures is None or failures < max_failures):
                item = next(queue, None)
                if item is None:
                    return
                running[pool.submit(_work, item)] = item

        refill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                result = future.result()
                failures += result.failed
                log.info("%s: %s", result.tenant_id, result.action)
                yield result
            refill()
    for item in queue:  # what the stop left
        yield not_run(item, failures)


def execute(
    settings: Settings,
    backend: Backend,
    items: list[WorkItem],
    *,
    jobs: int = 1,
    max_failures: int | None = None,
    template: FreshTemplate | None = None,
) -> Iterator[TenantResult]:
    if jobs > 1 and len(items) > 1:
        budget = backend.connection_budget()
        if budget < jobs:
            log.warning("--jobs %d lowered to %d: the database allows only %d more connections", jobs, budget, budget)
        jobs = min(jobs, len(items), budget)
    if jobs <= 1 or len(items) <= 1:
        return run_serial(backend, items, max_failures, template)
    return run_parallel(settings, items, jobs, max_failures, template)

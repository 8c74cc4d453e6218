"""Scheduling tenants: one after another, or on a pool of processes. Never raises for one
tenant's failure: each tenant's outcome comes back as a TenantResult, in order of completion.

Processes, not threads: Alembic's ``context`` and ``op`` are process globals. ``jobs`` tenants
at a time are this process and ``jobs - 1`` workers (run_parallel). Workers are spawned (no
state inherited from the parent), each builds its backend once and holds at most
one connection, reused from tenant to tenant (Backend.reusing_connection: everything tenant-
scoped is transaction-scoped, and a failed tenant's connection is discarded), and takes the next
tenant as soon as it is free, so one slow tenant never holds up a batch of others. A serial run
reuses one connection the same way.

When the database refuses a connection (it is down, or a connection limit is reached), that
tenant fails with the database's reason and no more tenants are handed out: those in flight
finish, the rest are reported not-run. A worker that dies (the OOM killer) fails its tenant the
same way (the parent's own tenant, if it has one, finishes first). Either way the caller gets
every tenant's result, never an exception; except when the database refused before the run did
anything at all: that is bad configuration or connection, raised as DatabaseUnavailableError
(exit 2, one line), as when it refuses the first read.

Signals. Workers ignore SIGINT: a Ctrl-C in a terminal reaches the whole process group, and only
the parent decides. SIGINT, or SIGTERM (which the CLI turns into Interrupted), interrupts the
parent: it hands out no more tenants, has every worker exit at once (a PostgreSQL transaction
whose connection is gone is rolled back by the server, a SQLite one from its journal on the
next open), reads the unfinished tenants' revisions again, and raises Interrupted with every
tenant's result: done, rolled back (never half-migrated), or not attempted. The parent's own
tenant, serial or not, rolls back as the exception leaves its transaction.

Parent death. A worker never outlives its parent, even one killed with kill -9: each watches a
pipe whose only write end the parent holds, and os._exit()s at its end of file, which comes as
the parent closes it to stop the workers or dies, however it dies; on Linux the kernel kills it
with the parent as well (prctl PR_SET_PDEATHSIG). Its tenant is rolled back as above, never
committed after the run is gone, and it holds none of the parent's pipes (stdout) open.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection

from .backends import Backend, FreshTemplate, backend_for
from .chain import Chain
from .config import Settings
from .errors import DatabaseUnavailableError, DocexMigrateError, Interrupted, TenantMovedError
from .results import ALREADY_AT_TARGET, Action, TenantResult, describe_error
from .runner import migrate_tenant

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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
    fresh: bool = False  # an empty namespace going to head: it may get the fresh template (fresh.py)
    versioned: bool = False  # the bulk read saw its alembic_version: read the revision directly
    expect: str | None = None  # undo: where the tenant must still be (a revision, or BASE), under its lock
    identity: str | None = None  # the namespace the bulk read found (Backend.identity); with expect, it must still be it


def _migrate(
    backend: Backend, item: WorkItem, template: FreshTemplate | None, chain: Chain | None
) -> tuple[str | None, str | None, str | None]:
    if item.fresh and template is not None and item.target:
        identity = backend.install_fresh(item.tenant_id, template, item.target)
        if identity is not None:
            return None, item.target, identity
    return migrate_tenant(
        backend,
        item.tenant_id,
        item.target,
        downgrade=item.downgrade,
        create=item.create,
        versioned=item.versioned,
        expect=item.expect,
        expect_identity=item.identity if item.expect is not None else None,
        chain=chain,
    )


def _success(item: WorkItem) -> Action:
    return item.action or (Action.DOWNGRADED if item.downgrade else Action.UPGRADED)


def run_item(backend: Backend, item: WorkItem, template: FreshTemplate | None = None, chain: Chain | None = None) -> TenantResult:
    """One tenant's result. ``chain``: the run's, loaded once (else each tenant checks the files)."""
    started = time.monotonic()
    result = _run_item(backend, item, template, chain)
    result.duration = time.monotonic() - started
    return result


def _run_item(backend: Backend, item: WorkItem, template: FreshTemplate | None, chain: Chain | None) -> TenantResult:
    result = TenantResult(item.tenant_id, item.namespace, _success(item), item.revision, item.target)
    try:
        result.from_revision, result.to_revision, result.identity = _migrate(backend, item, template, chain)
    except TenantMovedError as exc:  # undo: another run moved it since; left alone
        result.action, result.message = Action.SKIPPED, str(exc)
        result.from_revision = result.to_revision = exc.now_at
        return result
    except DatabaseUnavailableError as exc:  # the database refuses us: this tenant fails, the run stops
        result.action, result.to_revision, result.message, result.stops_run = Action.FAILED, item.revision, str(exc), True
        return result
    except Exception as exc:  # one tenant's failure is a value; the loop goes on
        log.debug("tenant %s failed", item.tenant_id, exc_info=True)
        result.action, result.to_revision, result.message = Action.FAILED, item.revision, describe_error(exc)
        return result
    if result.from_revision == result.to_revision:  # read after the lock: nothing was left to do
        result.action, result.message = Action.SKIPPED, f"{ALREADY_AT_TARGET} (another run got there first)"
    return result


def stopped_after(failures: int) -> str:
    return f"stopped after {failures} failure(s)"


def not_run(item: WorkItem, reason: str) -> TenantResult:
    return TenantResult(item.tenant_id, item.namespace, Action.NOT_RUN, item.revision, item.revision, f"not attempted: {reason}")


@dataclass
class FailureBudget:
    """How many failures the run may still take (None: any number), the failures so far, and
    why no more tenants are handed out once it is spent."""

    max_failures: int | None
    failures: int = 0
    stopped: str | None = None

    def spend(self, result: TenantResult) -> None:
        self.failures += result.failed
        if self.stopped is None and result.stops_run:
            self.stopped = f"the run stopped when {result.tenant_id} failed: {result.message}"
        elif self.stopped is None and self.max_failures is not None and self.failures >= self.max_failures:
            self.stopped = stopped_after(self.failures)


@dataclass
class _Dispatch:
    """Each tenant handed out and each result, told to the run's listeners (ledger, progress
    display); each result spends the failure budget."""

    budget: FailureBudget
    on_result: Callable[[TenantResult], None] | None = None  # told of each result as it arrives
    on_start: Callable[[str], None] | None = None  # told of each tenant as it is handed out

    @property
    def stopped(self) -> str | None:
        return self.budget.stopped

    def start(self, item: WorkItem) -> WorkItem:
        if self.on_start is not None:
            self.on_start(item.tenant_id)
        return item

    def record(self, result: TenantResult) -> TenantResult:
        log.info("%s: %s", result.tenant_id, result.action)
        if self.on_result is not None:
            self.on_result(result)
        self.budget.spend(result)
        return result


def _revision(backend: Backend, items: list[WorkItem]) -> dict[str, str | None]:
    """The tenants' revisions read now ({} if they cannot be read), as states.state_of spells them."""
    try:
        states = backend.read_states([i.tenant_id for i in items])
    except DocexMigrateError as exc:
        log.warning("cannot read the revisions of the unfinished tenants: %s", exc)
        return {}
    return {t: ",".join(s.revisions) or None for t, s in states.items()}


def unfinished(
    backend: Backend, items: list[WorkItem], in_flight: set[str], why: str, in_flight_action: Action = Action.NOT_RUN
) -> list[TenantResult]:
    """Results for the tenants a stopped run saw no result for. Those in flight are read again:
    each is at its target (committed just before the stop) or where it was (rolled back)."""
    now = _revision(backend, [i for i in items if i.tenant_id in in_flight]) if in_flight else {}
    results = []
    for item in items:
        if item.tenant_id not in in_flight:
            results.append(not_run(item, why))
            continue
        result = TenantResult(item.tenant_id, item.namespace, in_flight_action, item.revision, item.revision)
        if item.tenant_id not in now:
            result.message = f"{why} while it was being migrated: run `docex-migrate status` to see its revision"
        elif now[item.tenant_id] == item.target != item.revision:
            result.action = _success(item)
            result.to_revision, result.message = item.target, f"committed just before {why}"
        else:
            result.to_revision, result.message = now[item.tenant_id], f"{why}: rolled back"
        results.append(result)
    return results


def _interrupted(
    exc: KeyboardInterrupt, backend: Backend, items: list[WorkItem], results: list[TenantResult], in_flight: set[str]
) -> Interrupted:
    """The Interrupted to raise, carrying every tenant's result."""
    stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
    done = {r.tenant_id for r in results}
    left = [i for i in items if i.tenant_id not in done]
    stop.results = results + unfinished(backend, left, in_flight, f"interrupted by {stop.signal_name}")
    return stop


def run_serial(
    backend: Backend,
    items: list[WorkItem],
    dispatch: _Dispatch,
    template: FreshTemplate | None = None,
    chain: Chain | None = None,
) -> list[TenantResult]:
    results: list[TenantResult] = []
    current: set[str] = set()
    try:
        with backend.reusing_connection():
            for item in items:
                if dispatch.stopped:
                    results.append(not_run(item, dispatch.stopped))
                    continue
                current = {item.tenant_id}
                results.append(dispatch.record(run_item(backend, dispatch.start(item), template, chain)))
                current = set()
    except KeyboardInterrupt as exc:  # the tenant's transaction has rolled back on the way out
        raise _interrupted(exc, backend, items, results, current) from None
    return results


_worker_backend: Backend | None = None
_worker_template: FreshTemplate | None = None
_worker_scope = ExitStack()  # held for the worker's life: its connection ends with the process


def _start_worker(settings: Settings, template: FreshTemplate | None, lifeline: Connection) -> None:
    global _worker_backend, _worker_template
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    _die_with_parent(lifeline)
    _worker_backend, _worker_template = backend_for(settings), template
    _worker_scope.enter_context(_worker_backend.reusing_connection())


def _die_with_parent(lifeline: Connection) -> None:
    """Exit the moment the parent closes ``lifeline`` or dies, whatever the worker is doing:
    os._exit leaves the in-flight transaction to be rolled back, and commits nothing more."""
    if sys.platform == "linux":
        # Set in the worker itself, after spawn's exec, so nothing clears it. (The kernel sends
        # it when the thread that spawned us ends: the parent's main thread, in submit().)
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # the lifeline still ends with the parent
    threading.Thread(target=_watch, args=(lifeline,), name="lifeline", daemon=True).start()


def _watch(lifeline: Connection) -> None:
    lifeline.poll(None)  # nothing is ever sent: this returns at end of file
    os._exit(1)


def _ready() -> None:
    """A task that only proves the worker started."""


def _work(item: WorkItem) -> TenantResult:
    assert _worker_backend is not None
    # The chain from script_location, checked per tenant (a stat): a chain that cannot be
    # loaded fails the tenant, as in this process, rather than the worker.
    return run_item(_worker_backend, item, _worker_template)


def run_parallel(
    settings: Settings,
    backend: Backend,
    items: list[WorkItem],
    jobs: int,
    dispatch: _Dispatch,
    template: FreshTemplate | None = None,
    chain: Chain | None = None,
) -> list[TenantResult]:
    """``jobs`` tenants at a time: this process migrates one itself, as run_serial does, beside
    ``jobs - 1`` worker processes. The parent needs no start-up (it has imported everything
    already) and starts at once, while the workers start; on two cores it is two processes, not
    three. A worker's result is recorded, and the worker given its next tenant, by the pool's
    callback thread as the result arrives, so a long tenant in the parent holds up no worker;
    the lock keeps recording and handing out in step between the two threads."""
    results: list[TenantResult] = []
    running: dict[Future[TenantResult], WorkItem] = {}
    mine: set[str] = set()  # the tenant this process is migrating, or is handing to a worker
    waiting = deque(items)
    lock = threading.RLock()  # re-entered if a future is done before add_done_callback (it then runs here)
    all_done = threading.Condition(lock)
    broken: list[BaseException] = []  # a worker died: its future's exception
    closing = threading.Event()  # the pool is being shut down: hand out nothing more
    context = multiprocessing.get_context("spawn")
    lifeline, stop_workers = context.Pipe(duplex=False)  # workers get the read end only
    initargs = (settings, template, lifeline)

    def hand_out(pool: ProcessPoolExecutor) -> None:  # under the lock
        if waiting and not dispatch.stopped and not broken and not closing.is_set():
            item = dispatch.start(waiting.popleft())
            mine.add(item.tenant_id)  # until `running` holds it: an interrupt in between still re-reads it
            future = pool.submit(_work, item)
            running[future] = item
            mine.discard(item.tenant_id)
            future.add_done_callback(lambda f: arrived(pool, f))

    def arrived(pool: ProcessPoolExecutor, future: Future[TenantResult]) -> None:  # the pool's thread
        if future.cancelled() or future.exception() is not None:
            # Not under the lock: the pool may hold its own while it fails its futures, and
            # this thread holds ours while it submits. The main thread polls for this.
            broken.append(BrokenProcessPool() if future.cancelled() else future.exception() or BrokenProcessPool())
            return
        with lock:
            results.append(dispatch.record(future.result()))
            del running[future]
            hand_out(pool)
            all_done.notify_all()

    try:
        with ProcessPoolExecutor(jobs - 1, mp_context=context, initializer=_start_worker, initargs=initargs) as pool:
            try:
                with lock:
                    # Spawn every worker now, from this thread (see _die_with_parent), without
                    # waiting for them: their start-up overlaps the tenants migrated here. The
                    # pool's manager thread watches only the workers that existed when it last
                    # woke (CPython 3.11 spawns after waking it in submit); these results wake it
                    # again, so a worker that dies is noticed at once.
                    for _ in range(jobs - 1):
                        pool.submit(_ready)
                    for _ in range(jobs - 1):
                        hand_out(pool)
                with backend.reusing_connection():
                    while True:
                        with lock:
                            if broken or dispatch.stopped or not waiting:
                                break
                            item = dispatch.start(waiting.popleft())
                            mine.add(item.tenant_id)
                        result = run_item(backend, item, template, chain)
                        with lock:
                            results.append(dispatch.record(result))
                            mine.clear()
                with lock:
                    while running and not broken:
                        all_done.wait(0.5)
                    if broken:
                        raise broken[0]
            except BaseException:
                with lock:  # no hand_out is half done when the pool shuts down
                    closing.set()
                stop_workers.close()  # every worker exits now (see _watch); the pool then joins them
                raise
    except KeyboardInterrupt as exc:  # this process's tenant has rolled back on the way out
        with lock:
            in_flight = {i.tenant_id for i in running.values()} | mine
            raise _interrupted(exc, backend, items, list(results), in_flight) from None
    except BrokenProcessPool:  # a worker died (OOM killer, kill -9): its tenant rolled back
        with lock:
            in_flight = {i.tenant_id for i in running.values()}
            reported = {r.tenant_id for r in results}
        left = [i for i in items if i.tenant_id not in reported]
        return results + unfinished(backend, left, in_flight, "a worker process died", in_flight_action=Action.FAILED)
    finally:
        stop_workers.close()
        lifeline.close()
    return results + [not_run(item, dispatch.stopped or "the run stopped") for item in waiting]  # what the stop left


def _jobs(backend: Backend, jobs: int, count: int) -> int:
    if jobs <= 1 or count <= 1:
        return 1
    budget = backend.connection_budget()
    if budget < jobs:
        log.warning(
            "--jobs %d lowered to %d: the database allows only %d more connections "
            "(max_connections, or a CONNECTION LIMIT on the role or database)",
            jobs,
            budget,
            budget,
        )
    return min(jobs, count, budget)


def execute(
    settings: Settings,
    backend: Backend,
    items: list[WorkItem],
    *,
    jobs: int = 1,
    max_failures: int | None = None,
    template: FreshTemplate | None = None,
    on_result: Callable[[TenantResult], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    chain: Chain | None = None,
) -> list[TenantResult]:
    """One result per item, in order of completion. On SIGINT / SIGTERM raises Interrupted
    carrying them all (see the module's docstring). ``on_result`` is called in this process
    with each tenant's result as it arrives (the run ledger records it), ``on_start`` with each
    tenant id as it is handed out (the progress display shows it in flight)."""
    dispatch = _Dispatch(FailureBudget(max_failures), on_result=on_result, on_start=on_start)
    jobs = _jobs(backend, jobs, len(items))
    if jobs <= 1:
        results = run_serial(backend, items, dispatch, template, chain)
    else:
        results = run_parallel(settings, backend, items, jobs, dispatch, template, chain)
    refusals = [r for r in results if r.stops_run]
    if refusals and all(r.stops_run or r.action == Action.NOT_RUN for r in results):
        raise DatabaseUnavailableError(refusals[0].message)  # nothing done: nothing to report
    return results


def collect(finished: dict[str, TenantResult], run: Callable[[], list[TenantResult]]) -> Interrupted | None:
    """Run the executor, its results into ``finished``; on a signal, the results it carries
    too, and the Interrupted is returned, to be raised once every result is in place."""
    try:
        results = run()
    except Interrupted as stop:
        finished.update((r.tenant_id, r) for r in stop.results or [])
        return stop
    finished.update((r.tenant_id, r) for r in results)
    return None


def in_order(
    finished: dict[str, TenantResult], namespaces: dict[str, str], interrupted: Interrupted | None
) -> list[TenantResult]:
    """Every tenant's result in the order asked; raises ``interrupted`` carrying them, if given."""
    results = [finished[t] for t in namespaces if t in finished]
    if interrupted is not None:
        interrupted.results = results
        raise interrupted
    return results

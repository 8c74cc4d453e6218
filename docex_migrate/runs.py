"""Runs: every command that changes tenants records itself in the ledger (ledger.py), and the
record is read back reconciled with the tenants themselves.

Recording happens in the parent process, on connections of its own, never inside a tenant's
transaction: the run's row when its plan is made (with a row per selected tenant, ``pending``
until its result arrives), each tenant's result as it arrives (the executor's ``on_result``),
a heartbeat every few seconds, and the end (finished, or interrupted). Results and heartbeats
are written by the run's writer thread: a result costs the migrating thread a queue put, and
the results that arrive within FLUSH_SECONDS of each other share one short transaction, so
each reaches the ledger within about FLUSH_SECONDS of its tenant's commit. A run that plans no
work (every tenant already at the target, or refused before anything was touched) records
nothing: it changed nothing.

Reading never trusts a ``pending`` row of a run that is gone: a ``kill -9`` can fall between a
tenant's commit and its ledger row. Such a row is reconciled with where the tenant went next:
the revision the next run of the fleet found it at, or else the tenant's revision now (one
bulk read). A run is ``running`` only while its process lives (same host: its pid and start
time; another host: a fresh heartbeat); otherwise a run that never finished is ``interrupted``.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import queue
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from .backends import Backend, LedgerPlace, backend_for, open_backend
from .chain import BASE, Chain, load_chain
from .config import Settings
from .errors import Interrupted, UsageError
from .ledger import PENDING, RESULT_COLUMNS, Ledger, LedgerError, now
from .progress import RunProgress
from .results import Action, TenantResult, describe_error
from .states import state_of

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
FLUSH_SECONDS = 0.1  # how long a result may wait for others to share its ledger transaction
STALE_AFTER = timedelta(seconds=90)  # a run on another host with no heartbeat for this long is gone
RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"
MOVED = frozenset({Action.UPGRADED.value, Action.DOWNGRADED.value, Action.PROVISIONED.value})
REACHED = MOVED | {Action.SKIPPED.value, Action.ADOPTED.value}  # at the run's target when it ended
_RESULT_COLUMNS = ("tenant_id", *RESULT_COLUMNS)
UNDOABLE = frozenset({"upgrade", "downgrade", "provision", "undo"})


def tool_version() -> str:
    try:
        return package_version("docex-migrate")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"


def new_run_id() -> str:
    """Sortable, short and unique: the start time to the second, and 6 random hex digits."""
    return datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def _process_start(pid: int) -> str | None:
    """When a process started (clock ticks since boot, Linux), to tell it from a reused pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()[19]


def _target_name(target: str | None) -> str:
    return BASE if target is None else target


def _target_of(name: str | None) -> str | None:
    return None if name in (None, BASE) else name


# Recording


@dataclass
class Run:
    """The record of one run, written as it happens. Give it to the API's commands
    (``upgrade(..., run=Run(settings, "upgrade"))``); ``run_id`` names it in the ledger."""

    settings: Settings
    command: str
    selection: str = ""
    resumes: str | None = None
    undoes: str | None = None
    run_id: str = field(default_factory=new_run_id)
    announce: Callable[[Run], None] | None = None  # told once the run is in the ledger
    progress: RunProgress | None = None  # told of the plan and of each result (progress.py)
    recorded: bool = field(default=False, init=False)
    _ledger: Ledger | None = field(default=None, init=False, repr=False)
    _place: LedgerPlace | None = field(default=None, init=False, repr=False)
    _rows: dict[str, tuple[str, str | None, str]] = field(default_factory=dict, init=False, repr=False)
    _deferred: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)  # tenant -> row
    _target: str | None = field(default=None, init=False, repr=False)
    _has_target: bool = field(default=False, init=False, repr=False)
    _results: queue.SimpleQueue[dict[str, Any] | None] = field(default_factory=queue.SimpleQueue, init=False, repr=False)
    _writer: threading.Thread | None = field(default=None, init=False, repr=False)
    _closing: threading.Event = field(default_factory=threading.Event, init=False, repr=False)  # cuts the writer's wait short
    _warned: bool = field(default=False, init=False, repr=False)
    _unwritable: bool = field(default=False, init=False, repr=False)  # opening it failed: not tried again

    def planned(
        self,
        target: str | None,
        namespaces: Mapping[str, str],
        finished: Mapping[str, TenantResult],
        work: Sequence[Any],
        chain: Chain,
    ) -> None:
        """The plan of (part of) the run: results already decided, and WorkItems to run.
        The run enters the ledger with the first plan that has work."""
        if not self._has_target:
            self._target, self._has_target = target, True
        rows = [_row(self.run_id, r, _target_name(target)) for r in finished.values()]
        rows += [self._pending(item.tenant_id, item.namespace, item.revision, item.target, item.identity) for item in work]
        if not work and self._ledger is None:
            self._deferred.update((r["tenant_id"], r) for r in rows)  # nothing changes yet: recorded only if something does
            return
        self._open(chain)
        self._insert(rows)
        if self.progress is not None:
            self.progress.add(len(work))

    def reserve(self, target: str | None, tenants: Mapping[str, tuple[str, str | None]]) -> None:
        """Every tenant a staged run is to reach (tenant -> namespace and revision now), pending
        from the start: a run stopped between waves leaves the later ones for ``--resume``.
        Recorded with the first plan that has work, each replaced as its own plan comes."""
        rows = [self._pending(t, namespace, revision, target) for t, (namespace, revision) in tenants.items()]
        if self._ledger is None:
            self._deferred.update((r["tenant_id"], r) for r in rows)
        else:
            self._insert(rows)

    def _pending(
        self, tenant_id: str, namespace: str, revision: str | None, target: str | None, identity: str | None = None
    ) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "tenant_id": tenant_id,
            "namespace": namespace,
            "action": PENDING,
            "from_revision": revision,
            "to_revision": None,
            "target": _target_name(target),
            "finished_at": None,
            "duration_ms": None,
            "message": "",
            "identity": identity,
        }

    def on_start(self, tenant_id: str) -> None:
        """A tenant handed out: only the progress display is told (the ledger has it pending)."""
        if self.progress is not None:
            self.progress.started(tenant_id)

    def on_result(self, result: TenantResult) -> None:
        """One tenant's result, recorded as it arrives."""
        if self.progress is not None:
            self.progress.result(result)
        if self._writer is not None:
            row = _row(self.run_id, result, None)
            self._results.put({k: row[k] for k in _RESULT_COLUMNS})

    def as_it_comes(self, chain: Chain) -> Callable[[TenantResult], None]:
        """For a command without a plan (adopt): each result recorded as it is decided. The run
        enters the ledger with its first change; what came before goes in with it. A ledger
        written by a newer docex-migrate is refused now, before any tenant is touched."""
        try:
            with open_backend(self.settings) as backend:
                book = Ledger.for_reading(backend.ledger())
            if book is not None:
                book.close()
        except LedgerError:
            raise
        except Exception as exc:  # the ledger never stops a migration: writing it will warn
            log.debug("cannot read the run ledger: %s", exc)

        def record(result: TenantResult) -> None:
            row = _row(self.run_id, result, None)
            if self._ledger is None and result.action.value not in MOVED | {Action.ADOPTED.value}:
                self._deferred[row["tenant_id"]] = row
                return
            self._open(chain)
            self._insert([row])

        return record

    def close(self, results: Sequence[TenantResult], *, error: BaseException | None = None, chain: Chain | None = None) -> None:
        """The run's end: every result not yet recorded as it is, and the run's state."""
        if self.progress is not None:
            self.progress.close()
        if self._ledger is None and any(r.action.value in MOVED | {Action.ADOPTED.value} for r in results):
            self._open(chain or load_chain())  # adopt, deprovision: a change without a plan
            self._insert([])
        if self._ledger is None:
            return
        if self._writer is not None:  # what it holds is written before the end is
            self._results.put(None)
            self._closing.set()
            self._writer.join()
            self._writer = None
        target = _target_name(self._target) if self._has_target else None
        self._insert([_row(self.run_id, r, target) for r in results if r.tenant_id not in self._rows])
        changed = []
        for result in results:
            row = _row(self.run_id, result, None)
            if self._rows.get(result.tenant_id) != _recorded_as(row):
                changed.append({k: row[k] for k in _RESULT_COLUMNS})
        state = INTERRUPTED if isinstance(error, KeyboardInterrupt) else FINISHED
        why = None if error is None or isinstance(error, KeyboardInterrupt) else str(error) or type(error).__name__
        self._write(lambda ledger: ledger.update_results(self.run_id, changed))
        self._write(lambda ledger: ledger.update_run(self.run_id, {"finished_at": now(), "state": state, "error": why}))
        self._ledger.close()
        self._ledger = None

    def deprovisioned(self, result: TenantResult, chain: Chain) -> None:
        """A deprovision done: the tenant's row (its backup in the message), and the run's end."""
        try:
            self._open(chain)
        except LedgerError as exc:  # the tenant is gone already: say so, do not fail
            log.warning("%s: this deprovision is not recorded", exc)
            return
        self._insert([_row(self.run_id, result, None)])
        self.close([result], chain=chain)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """New tenant rows, with those deferred until the run had something to record; a
        tenant already recorded (reserved pending) has its row updated instead."""
        latest = {**self._deferred, **{r["tenant_id"]: r for r in rows}}
        self._deferred = {}
        new = [r for t, r in latest.items() if t not in self._rows]
        known = [{k: r[k] for k in _RESULT_COLUMNS} for t, r in latest.items() if t in self._rows]
        if self._write(lambda ledger: ledger.insert_tenants(new)):
            self._rows.update((r["tenant_id"], _recorded_as(r)) for r in new)
        if known and self._write(lambda ledger: ledger.update_results(self.run_id, known)):
            self._rows.update((r["tenant_id"], _recorded_as(r)) for r in known)

    def _open(self, chain: Chain) -> None:
        if self._ledger is not None or self._unwritable:
            return
        backend = backend_for(self.settings)
        try:
            self._place = backend.ledger()
            self._ledger = Ledger.for_writing(self._place)
        except LedgerError:
            raise  # a newer docex-migrate's ledger: refused, before any tenant is touched
        except Exception as exc:  # the ledger never stops a migration
            log.warning("the run ledger cannot be written (%s): this run is not recorded", describe_error(exc))
            self._ledger, self._unwritable = None, True
            return
        finally:
            backend.dispose()
        started = now()
        if not self._write(lambda ledger: ledger.insert_run(self._run_row(chain, started))):
            self._ledger.close()
            self._ledger = None
            return
        self.recorded = True
        self._writer = threading.Thread(target=self._write_results, name="ledger-writer", daemon=True)
        self._writer.start()
        if self.announce is not None:
            self.announce(self)

    def _run_row(self, chain: Chain, started: str) -> dict[str, Any]:
        assert self._place is not None
        return {
            "run_id": self.run_id,
            "command": self.command,
            "target": _target_name(self._target) if self._has_target else None,
            "selection": self.selection,
            "resumes": self.resumes,
            "undoes": self.undoes,
            "fleet": self._place.database,
            "user_name": _user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "version": tool_version(),
            "chain_head": chain.head,
            "started_at": started,
            "heartbeat_at": started,
            "state": RUNNING,
        }

    def _write_results(self) -> None:
        """The writer thread: results as they arrive, batched over FLUSH_SECONDS, and a heartbeat
        (so a run on another host can be told alive), on a ledger connection of its own, until
        close() sends None. A result lost to kill -9 before it was written is reconciled when
        read, like any pending row."""
        assert self._place is not None
        try:
            ledger = Ledger.for_writing(self._place, create=False)
        except Exception as exc:  # the results are written at the end instead (close)
            log.debug("ledger writer: %s", exc)
            while self._results.get() is not None:
                pass
            return
        beat_at, done = time.monotonic() + HEARTBEAT_SECONDS, False
        try:
            while not done:
                try:
                    first = self._results.get(timeout=max(0.0, beat_at - time.monotonic()))
                    if first is not None:
                        # The results arriving meanwhile share the transaction; the run's end does not wait.
                        self._closing.wait(FLUSH_SECONDS)
                    items = [first, *_drain(self._results)]
                except queue.Empty:
                    items = []
                done = None in items
                self._write_batch(ledger, [item for item in items if item is not None])
                if time.monotonic() >= beat_at:
                    self._write(lambda ledger: ledger.update_run(self.run_id, {"heartbeat_at": now()}), ledger)
                    beat_at = time.monotonic() + HEARTBEAT_SECONDS
        finally:
            ledger.close()

    def _write_batch(self, ledger: Ledger, updates: list[dict[str, Any]]) -> None:
        if updates and self._write(lambda ledger: ledger.update_results(self.run_id, updates), ledger):
            self._rows.update((u["tenant_id"], _recorded_as(u)) for u in updates)

    def _write(self, write: Callable[[Ledger], None], ledger: Ledger | None = None) -> bool:
        """A ledger write (on the run's connection, or the writer's) that never fails the run:
        a problem is one warning, and reading reconciles what is missing."""
        ledger = ledger or self._ledger
        if ledger is None:
            return False
        try:
            write(ledger)
            return True
        except Exception as exc:
            if not self._warned:
                log.warning("the run ledger could not record run %s: %s", self.run_id, exc)
                self._warned = True
            return False


def _recorded_as(row: Mapping[str, Any]) -> tuple[str, str | None, str]:
    """What the ledger holds of a tenant's row, to tell whether close() must write it again."""
    return row["action"], row["to_revision"], row["message"]


def _drain(results: queue.SimpleQueue[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
    items = []
    with contextlib.suppress(queue.Empty):
        while True:
            items.append(results.get_nowait())
    return items


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _row(run_id: str, result: TenantResult, target: str | None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "tenant_id": result.tenant_id,
        "namespace": result.namespace,
        "action": result.action.value,
        "from_revision": result.from_revision,
        "to_revision": result.to_revision,
        "target": target,
        "finished_at": now(),
        "duration_ms": None if result.duration is None else round(result.duration * 1000),
        "message": result.message,
        "identity": result.identity,
    }


@contextlib.contextmanager
def recording(run: Run | None, chain: Chain) -> Iterator[Callable[[list[TenantResult]], list[TenantResult]]]:
    """Around a command: ``done(results)`` ends the run as finished; an interrupt ends it as
    interrupted with the results the Interrupted carries; any other error, as finished with
    the error."""
    if run is None:
        yield lambda results: results
        return

    def done(results: list[TenantResult]) -> list[TenantResult]:
        run.close(results, chain=chain)
        return results

    try:
        yield done
    except Interrupted as stop:
        run.close(stop.results or [], error=stop, chain=chain)
        raise
    except BaseException as exc:
        run.close([], error=exc, chain=chain)
        raise


# Reading


@dataclass(frozen=True)
class RunTenant:
    tenant_id: str
    namespace: str
    action: str
    from_revision: str | None
    to_revision: str | None
    target: str | None
    finished_at: str | None
    duration_ms: int | None
    message: str
    identity: str | None = None  # which namespace it was (Backend.identity); None in older ledgers

    def as_dict(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "namespace": self.namespace,
            "action": self.action,
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
            "target": self.target,
            "finished_at": self.finished_at,
            "duration_ms": self.duration_ms,
            "message": self.message,
        }


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    command: str
    target: str | None
    selection: str
    resumes: str | None
    undoes: str | None
    user: str
    host: str
    pid: int
    version: str
    chain_head: str | None
    started_at: str
    finished_at: str | None
    state: str
    error: str | None
    counts: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "target": self.target,
            "selection": self.selection,
            "resumes": self.resumes,
            "undoes": self.undoes,
            "user": self.user,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "chain_head": self.chain_head,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "state": self.state,
            "error": self.error,
            "counts": self.counts,
        }


@dataclass(frozen=True)
class RunDetail:
    run: RunInfo
    tenants: list[RunTenant]

    def as_dict(self) -> dict[str, object]:
        return {**self.run.as_dict(), "tenants": [t.as_dict() for t in self.tenants]}


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
            to_revision, target, before = after[row["tenant_id"]], _target_of(row["target"]), row["from_revision"]
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
        row = _find(ledger, place, run_id)
        assert ledger is not None
        tenants = _reconciled(ledger, backend, chain, row, ledger.tenants(run_id))
        return RunDetail(_info(row, dict(Counter(t.action for t in tenants))), tenants)


def revisions_now(settings: Settings, tenant_ids: Sequence[str], chain: Chain) -> dict[str, str | None]:
    """The tenants' revisions, read in bulk (read-only)."""
    with open_backend(settings) as backend:
        return {t: state_of(chain, s)[0] for t, s in backend.read_states(tenant_ids).items()}


def _find(ledger: Ledger | None, place: LedgerPlace, run_id: str) -> dict[str, Any]:
    if ledger is None:
        raise UsageError(f"no run {run_id!r}: no run has been recorded yet ({place.where})")
    row = ledger.run(run_id)
    if row is None:
        raise UsageError(f"no run {run_id!r} in the run ledger ({place.where}): see `docex-migrate runs`")
    if row["fleet"] not in place.fleets:
        raise UsageError(f"run {run_id!r} belongs to another database or template ({row['fleet']}), not {place.database}")
    return row


def _settled(settings: Settings, run_id: str, chain: Chain) -> tuple[dict[str, Any], list[RunTenant], Backend]:
    """A run that has ended, and its reconciled tenants: what resume and undo start from."""
    backend = backend_for(settings)
    try:
        place = backend.ledger()
        ledger = Ledger.for_reading(place)
        try:
            row = _find(ledger, place, run_id)
            assert ledger is not None
            if _state(row) == RUNNING:
                raise UsageError(f"run {run_id} is still running (pid {row['pid']} on {row['host']}): let it finish, or stop it")
            tenants = _reconciled(ledger, backend, chain, row, ledger.tenants(run_id))
        finally:
            if ledger is not None:
                ledger.close()
    except BaseException:
        backend.dispose()
        raise
    return row, tenants, backend


def resume_plan(settings: Settings, run_id: str, command: str, chain: Chain) -> tuple[list[str], str, str]:
    """The tenants of ``run_id`` that did not reach its target, that target, and the run's
    command (a provision's tenants may not exist yet): what ``upgrade --resume`` /
    ``downgrade --resume`` runs. UsageError (exit 2) when it cannot.

    Unlike undo, resume does not ask whether a tenant is still the namespace the run planned
    (its identity): it finishes the run's aim, bringing each tenant to the target wherever it
    is now, as running the same command again would; it never takes back what another did."""
    row, tenants, backend = _settled(settings, run_id, chain)
    backend.dispose()
    resumable = {"upgrade": ("upgrade", "provision"), "downgrade": ("downgrade",)}[command]
    if row["command"] not in resumable:
        raise UsageError(f"run {run_id} was a {row['command']}, not a {command}: it cannot be resumed by `{command} --resume`")
    target = str(row["target"] or BASE)
    if target != BASE and not chain.knows(target):
        raise UsageError(
            f"run {run_id} went to revision {target}, which this chain does not know: use the docex-migrate that ran it"
        )
    return [t.tenant_id for t in tenants if t.action not in REACHED], target, str(row["command"])


@dataclass
class UndoPlan:
    """What undo does: tenants grouped by the revision they go back to, and those left alone."""

    groups: dict[tuple[str | None, bool], list[str]]  # (target, downgrade) -> tenants
    left_alone: list[TenantResult]
    # tenant -> where the run left it (BASE for none) and the namespace it moved (None: not
    # recorded), both checked again under the tenant's lock
    left_at: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def undo_plan(settings: Settings, run_id: str, chain: Chain) -> UndoPlan:
    """Every tenant that ``run_id`` moved and that is still where it left it goes back to the
    revision it had before; one that moved since, or that is not the namespace it moved (dropped
    and created again since: its identity differs), is left alone and listed."""
    row, tenants, backend = _settled(settings, run_id, chain)
    try:
        if row["command"] == "deprovision":
            backups = "; ".join(t.message for t in tenants) or "its backup"
            raise UsageError(
                f"run {run_id} was a deprovision: undo cannot bring a dropped tenant back; restore it from {backups}"
            )
        if row["command"] not in UNDOABLE:
            raise UsageError(
                f"run {run_id} was an {row['command']}: only upgrade, downgrade, provision and undo runs can be undone"
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
        if why is not None:
            plan.left_alone.append(TenantResult(t.tenant_id, t.namespace, Action.SKIPPED, now_at, now_at, f"{why}: left alone"))
            continue
        downgrade = chain.position(t.from_revision) < chain.position(t.to_revision)
        plan.groups.setdefault((t.from_revision, downgrade), []).append(t.tenant_id)
        plan.left_at[t.tenant_id] = (_target_name(t.to_revision), t.identity)
    return plan

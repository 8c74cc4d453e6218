"""Recording a run: every command that changes tenants records itself in the ledger
(ledger.py) as it happens; run_history.py reads the record back.

Recording happens in the parent process, on connections of its own, never inside a tenant's
transaction: the run's row when its plan is made (with a row per selected tenant, ``pending``
until its result arrives), each tenant's result as it arrives (the executor's ``on_result``),
a heartbeat every few seconds, and the end (finished, or interrupted). Results and heartbeats
are written by the run's writer thread: a result costs the migrating thread a queue put, and
the results that arrive within FLUSH_SECONDS of each other share one short transaction, so
each reaches the ledger within about FLUSH_SECONDS of its tenant's commit. A run that plans no
work (every tenant already at the target, or refused before anything was touched) records
nothing: it changed nothing.

"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from .backends import LedgerPlace, backend_for, open_backend
from .chain import BASE, Chain, load_chain
from .config import Settings
from .errors import Interrupted
from .ledger import RESULT_COLUMNS, Ledger, LedgerError, now
from .progress import RunProgress
from .results import PENDING, Action, TenantResult, describe_error

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
FLUSH_SECONDS = 0.1  # how long a result may wait for others to share its ledger transaction
STALE_AFTER = timedelta(seconds=90)  # a run on another host with no heartbeat for this long is gone
RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"
MOVED = frozenset({Action.UPGRADED.value, Action.DOWNGRADED.value, Action.PROVISIONED.value})
REACHED = MOVED | {Action.SKIPPED.value, Action.ADOPTED.value}  # at the run's target when it ended
_RESULT_COLUMNS = ("tenant_id", *RESULT_COLUMNS)
UNDOABLE = frozenset({"upgrade", "downgrade", "provision", "undo"})
# What enters the ledger on its own (a run that only skipped or refused records nothing).
CHANGED = MOVED | {Action.ADOPTED.value, Action.REPAIRED.value, Action.RESTORED.value}


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


def target_name(target: str | None) -> str:
    return BASE if target is None else target


def target_of(name: str | None) -> str | None:
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
    staging: str | None = None  # a staged rollout's canaries, waves and pause (JSON; migration.py)
    run_id: str = field(default_factory=new_run_id)
    announce: Callable[[Run], None] | None = None  # told once the run is in the ledger
    progress: RunProgress | None = None  # told of the plan and of each result (progress.py)
    recorded: bool = field(default=False, init=False)
    _ledger: Ledger | None = field(default=None, init=False, repr=False)
    _place: LedgerPlace | None = field(default=None, init=False, repr=False)
    _rows: dict[str, tuple[str, str | None, str]] = field(default_factory=dict, init=False, repr=False)
    _deferred: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)  # tenant -> row
    _waves: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # tenant -> its group (reserve)
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
        rows = [_row(self.run_id, r, target_name(target)) for r in finished.values()]
        rows += [self._pending(item.tenant_id, item.namespace, item.revision, item.target, item.identity) for item in work]
        if not work and self._ledger is None:
            self._deferred.update((r["tenant_id"], r) for r in rows)  # nothing changes yet: recorded only if something does
            return
        self._open(chain)
        self._insert(rows)
        if self.progress is not None:
            self.progress.add(len(work))

    def reserve(
        self, target: str | None, tenants: Mapping[str, tuple[str, str | None]], waves: Mapping[str, int] | None = None
    ) -> None:
        """Every tenant a staged run is to reach (tenant -> namespace and revision now), pending
        from the start: a run stopped between waves leaves the later ones for ``--resume``.
        Recorded with the first plan that has work, each replaced as its own plan comes.
        ``waves``: tenant -> its group, from 1 (none: past the last wave), which ``--resume`` keeps."""
        self._waves.update(waves or {})
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
            "target": target_name(target),
            "finished_at": None,
            "duration_ms": None,
            "message": "",
            "identity": identity,
            "backup": None,  # every row of one insert has every key (_row's): one multi-row INSERT
            "wave": None,
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
            if self._ledger is None and result.action.value not in CHANGED:
                self._deferred[row["tenant_id"]] = row
                return
            self._open(chain)
            self._insert([row])

        return record

    def close(self, results: Sequence[TenantResult], *, error: BaseException | None = None, chain: Chain | None = None) -> None:
        """The run's end: every result not yet recorded as it is, and the run's state."""
        if self.progress is not None:
            self.progress.close()
        if self._ledger is None and any(r.action.value in CHANGED for r in results):
            self._open(chain or load_chain())  # adopt, repair, restore: a change without a plan
            self._insert([])
        if self._ledger is None:
            return
        if self._writer is not None:  # what it holds is written before the end is
            self._results.put(None)
            self._closing.set()
            self._writer.join()
            self._writer = None
        target = target_name(self._target) if self._has_target else None
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
        self.done_at_once(result, chain, None)

    def done_at_once(self, result: TenantResult, chain: Chain, target: str | None) -> None:
        """A one-tenant change already committed (deprovision, restore): its row and the run's
        end. A ledger that cannot be written only warns: the change is done."""
        self._target, self._has_target = target, target is not None
        try:
            self._open(chain)
        except LedgerError as exc:  # the change is made already: say so, do not fail
            log.warning("%s: this %s is not recorded", exc, self.command)
            return
        self._insert([_row(self.run_id, result, None)])
        self.close([result], chain=chain)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """New tenant rows, with those deferred until the run had something to record; a
        tenant already recorded (reserved pending) has its row updated instead."""
        latest = {**self._deferred, **{r["tenant_id"]: r for r in rows}}
        self._deferred = {}
        new = [{**r, "wave": self._waves.get(t)} for t, r in latest.items() if t not in self._rows]
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
            "target": target_name(self._target) if self._has_target else None,
            "selection": self.selection,
            "resumes": self.resumes,
            "undoes": self.undoes,
            "staging": self.staging,
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
        "backup": result.backup,
        "wave": None,  # set from the run's reserve when the row is first inserted
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

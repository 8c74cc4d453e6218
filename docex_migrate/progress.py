"""Progress as a run happens, on stderr: a live display on a terminal (rich, which typer
brings), one line per tenant as it finishes anywhere else (CI logs, ``kubectl logs``).

Fed by the run (run_record.Run): ``add`` with the tenants each plan hands to Alembic, ``started``
as each is handed out, ``result`` with each tenant's result as it arrives in the parent
process, ``close`` at the end. ``started`` and ``result`` may come from two threads (--jobs).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Protocol, TextIO

from .results import TenantResult

if TYPE_CHECKING:  # rich is imported only for a terminal: elsewhere (CI, benchmarks) it cost ~20 ms a command
    from rich.console import Console
    from rich.progress import TaskID


class RunProgress(Protocol):
    def add(self, tenants: int) -> None: ...

    def started(self, tenant_id: str) -> None: ...

    def result(self, result: TenantResult) -> None: ...

    def close(self) -> None: ...


def _outcome(result: TenantResult) -> str:
    ms = f" ({result.duration * 1000:.0f} ms)" if result.duration is not None else ""
    if result.incomplete:
        return f"{result.action.value.upper()} at {result.to_revision or 'base'}: {result.message}{ms}"
    return f"{result.action.value} {result.from_revision or 'base'} -> {result.to_revision or 'base'}{ms}"


class Lines:
    """One line per tenant as it finishes: ``[12/1000] acme upgraded s6 -> s7 (38 ms)``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.total = self.done = 0

    def add(self, tenants: int) -> None:
        self.total += tenants

    def started(self, tenant_id: str) -> None:
        pass  # a line per tenant as it finishes: what is in flight is the next lines

    def result(self, result: TenantResult) -> None:
        self.done += 1
        self.stream.write(f"[{self.done}/{self.total}] {result.tenant_id} {_outcome(result)}\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class Live:
    """done/total, failures so far, rate, ETA and the tenants in flight, redrawn in place."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.began = time.monotonic()
        self.failures = 0
        self.display = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failures]} failed, {task.fields[rate]}/s"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[now]}"),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.in_flight: dict[str, None] = {}  # in the order handed out

    def add(self, tenants: int) -> None:
        if self.task is None:
            self.display.start()
            self.task = self.display.add_task("tenants", total=tenants, failures=0, rate="-", now="")
        else:
            self.display.update(self.task, total=(self.display.tasks[0].total or 0) + tenants)

    def started(self, tenant_id: str) -> None:
        self.in_flight[tenant_id] = None
        if self.task is not None:
            self.display.update(self.task, now=self._now())

    def _now(self) -> str:
        names = list(self.in_flight)
        more = f" (+{len(names) - 3})" if len(names) > 3 else ""
        return "in flight: " + ", ".join(names[:3]) + more if names else ""

    def result(self, result: TenantResult) -> None:
        self.in_flight.pop(result.tenant_id, None)
        if self.task is None:
            return
        self.failures += result.failed
        done = self.display.tasks[0].completed + 1
        rate = done / max(time.monotonic() - self.began, 1e-6)
        self.display.update(
            self.task,
            advance=1,
            failures=self.failures,
            rate=f"{rate:.1f}",
            now=self._now(),
        )

    def close(self) -> None:
        if self.task is not None:
            self.display.stop()


def for_stderr(stream: TextIO | None = None) -> RunProgress:
    """A live display when ``stream`` (stderr) is a terminal, else lines."""
    stream = stream or sys.stderr
    if stream.isatty():
        from rich.console import Console

        return Live(Console(file=stream))
    return Lines(stream)

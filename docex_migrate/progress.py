"""Progress as a run happens, on stderr: a live display on a terminal (rich, which typer
brings), one line per tenant as it finishes anywhere else (CI logs, ``kubectl logs``).

Fed by the run (run_record.Run): ``add`` with the tenants each plan hands to Alembic, ``started``
as each is handed out, ``result`` with each tenant's result as it arrives in the parent
process, ``close`` at the end. ``started`` and ``result`` may come from two threads (--jobs).
A staged run (migration.py) also gives ``expect`` the whole run's count up front, so the
counter runs to the end of the run, not of the wave, and names each ``wave`` and ``pausing``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Protocol, TextIO

from .results import TenantResult

if TYPE_CHECKING:  # rich is imported only for a terminal: elsewhere (CI, benchmarks) it cost ~20 ms a command
    from rich.console import Console
    from rich.progress import TaskID


class RunProgress(Protocol):
    def add(self, tenants: int) -> None: ...

    def expect(self, tenants: int) -> None: ...

    def wave(self, number: int, of: int, tenants: int, canaries: bool) -> None: ...

    def pausing(self, seconds: float, before: int, of: int) -> None: ...

    def started(self, tenant_id: str) -> None: ...

    def result(self, result: TenantResult) -> None: ...

    def close(self) -> None: ...


def _outcome(result: TenantResult) -> str:
    ms = f" ({result.duration * 1000:.0f} ms)" if result.duration is not None else ""
    if result.incomplete:
        return f"{result.action.value.upper()} at {result.to_revision or 'base'}: {result.message}{ms}"
    return f"{result.action.value} {result.from_revision or 'base'} -> {result.to_revision or 'base'}{ms}"


def _wave(number: int, of: int, tenants: int, canaries: bool) -> str:
    return f"wave {number} of {of}{' (the canaries)' if canaries else ''}: {tenants} tenant{'s' * (tenants != 1)}"


class _Countdown:
    """The pause before a wave, as the live display's text: the time left is worked out each
    time the display redraws it (rich formats the field anew at every refresh)."""

    def __init__(self, seconds: float, before: int, of: int) -> None:
        self.until, self.before, self.of = time.monotonic() + seconds, before, of

    def __str__(self) -> str:
        left = max(0, math.ceil(self.until - time.monotonic()))
        return f"pausing: wave {self.before} of {self.of} in {left // 60}:{left % 60:02d}"


class Lines:
    """One line per tenant as it finishes: ``[12/1000] acme upgraded s6 -> s7 (38 ms)``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.expected = self.added = self.done = 0

    def add(self, tenants: int) -> None:
        self.added += tenants

    def expect(self, tenants: int) -> None:
        self.expected = tenants

    def wave(self, number: int, of: int, tenants: int, canaries: bool) -> None:
        self._line(_wave(number, of, tenants, canaries))

    def pausing(self, seconds: float, before: int, of: int) -> None:
        self._line(f"pausing {seconds:g} s before wave {before} of {of}")  # else a pause looks like a hang

    def started(self, tenant_id: str) -> None:
        pass  # a line per tenant as it finishes: what is in flight is the next lines

    def result(self, result: TenantResult) -> None:
        self.done += 1
        self._line(f"[{self.done}/{max(self.expected, self.added)}] {result.tenant_id} {_outcome(result)}")

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class Live:
    """The wave, done/total, failures so far, rate, ETA and the tenants in flight (or the pause's
    countdown), redrawn in place."""

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
        self.expected = self.added = 0

    def _task(self) -> TaskID:
        if self.task is None:
            self.display.start()
            self.task = self.display.add_task("tenants", total=0, failures=0, rate="-", now="")
        return self.task

    def add(self, tenants: int) -> None:
        self.added += tenants
        self.display.update(self._task(), total=max(self.expected, self.added))

    def expect(self, tenants: int) -> None:
        self.expected = tenants
        self.display.update(self._task(), total=max(self.expected, self.added))

    def wave(self, number: int, of: int, tenants: int, canaries: bool) -> None:
        self.display.update(self._task(), description=_wave(number, of, tenants, canaries), now=self._now())

    def pausing(self, seconds: float, before: int, of: int) -> None:
        self.display.update(self._task(), now=_Countdown(seconds, before, of))

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

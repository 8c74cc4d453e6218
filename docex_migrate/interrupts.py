"""What a signal does to a command: SIGINT and SIGTERM raise Interrupted in the main thread,
and an interrupted run is finished by the command that ``finishing`` names."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import Interrupted

if TYPE_CHECKING:
    from .run_record import Run


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread: a run stops between tenants, or
    inside one whose transaction then rolls back, and reports what it did (SIGTERM would
    otherwise end the process on the spot, printing nothing and leaving its workers behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def finishing(recorded: Run) -> str:
    """The command that finishes an interrupted run: undo the same run again (the tenants
    already undone are left alone); resume the others (a provision's as upgrade --resume,
    which provisions the tenants it never created)."""
    if recorded.command == "undo":
        return f"undo {recorded.undoes}"
    verb = "downgrade" if recorded.command == "downgrade" else "upgrade"
    return f"{verb} --resume {recorded.run_id}"

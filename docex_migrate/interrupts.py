"""What a signal does to a command: SIGINT and SIGTERM raise Interrupted in the main thread,
and an interrupted run is finished by the command that ``finishing`` names.

Except once a change has committed. A signal that lands after a tenant's change committed
(restore, a repair, an adoption's stamp, a deprovision's drop) must not turn a change made
into a failure exit, nor stop its recording half way: the command calls ``hold()`` just
before it commits, and from then on a signal is noted, not raised. Between tenants ``raise_held()`` ends the hold, raising a signal noted
during it (the run stops there, before the next tenant); at the end the command line asks
``noted()`` which signal arrived, if any, once the work was committed: the command then exits
with what happened (0 when it all succeeded), and says on stderr that the signal came after
the work was done and stopped nothing. The hold lasts until the handlers are removed. Without the command line's handlers (a library caller), holding does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import Interrupted

if TYPE_CHECKING:
    from .run_record import Run


@dataclass
class _State:
    installed: bool = False  # signals_interrupt's handlers are in place
    holding: bool = False
    noted: int | None = None  # the first signal that arrived while holding


_state = _State()


def _raise_interrupted(signum: int, frame: object) -> None:
    if _state.holding:
        if _state.noted is None:
            _state.noted = signum
        return
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
    _state.installed, _state.holding, _state.noted = True, False, None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.installed, _state.holding, _state.noted = False, False, None


def hold() -> None:
    """Called just before a change commits: from now on SIGINT and SIGTERM are noted, not
    raised, so that neither the commit nor what follows it (recording the run, printing the
    result) is cut short, and a change made is reported as made. Ended by raise_held or release."""
    if _state.installed and threading.current_thread() is threading.main_thread():
        _state.holding = True


def raise_held() -> None:
    """End the hold (if any); a signal that arrived during it is raised now, as Interrupted:
    between tenants, a signal after the previous one committed stops the run before the next."""
    signum = release()
    if signum is not None:
        raise Interrupted(signum)


def noted() -> int | None:
    """The signal that arrived while holding, if any; the hold goes on (to the end of
    signals_interrupt, for the command line once it has printed: no signal then cuts it short)."""
    return _state.noted


def release() -> int | None:
    """End the hold (if any): the signal that arrived during it, or None. Signals raise again."""
    signum, _state.holding, _state.noted = _state.noted, False, None
    return signum


def finishing(recorded: Run) -> str:
    """The command that finishes an interrupted run: undo the same run again (the tenants
    already undone are left alone); resume the others (a provision's as upgrade --resume,
    which provisions the tenants it never created)."""
    if recorded.command == "undo":
        return f"undo {recorded.undoes}"
    verb = "downgrade" if recorded.command == "downgrade" else "upgrade"
    return f"{verb} --resume {recorded.run_id}"

"""One command's invocation: what every step of a command needs, built once when it starts.

The settings, the chain (loaded once), the backend (opened once, here, and disposed of when the
command ends), the run that records it in the ledger (or None), the failure budget
(``max_failures``), the parallelism (``jobs``), the shard, and the progress sink (the run's).
With ``plan_only`` (--plan) the command plans exactly as it would run, and its
work is reported as what would be done (migration.execute_plan) instead of being done.
The API builds one per command and hands it down instead of a dozen parameters; nothing is
built per tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .backends import Backend, open_backend
from .chain import Chain, load_chain
from .config import Settings
from .errors import UsageError
from .progress import RunProgress
from .run_record import Run


@dataclass
class Invocation:
    settings: Settings
    chain: Chain
    backend: Backend
    run: Run | None = None
    max_failures: int | None = None  # failures (refusals included) after which no tenant is handed out
    jobs: int = 1
    shard: tuple[int, int] | None = None
    # --plan: decide everything as the command would, hand nothing to the executor, record nothing
    plan_only: bool = False

    @property
    def progress(self) -> RunProgress | None:
        """Where progress goes: the run's display, if it has one."""
        return self.run.progress if self.run is not None else None


@contextmanager
def invoked(
    settings: Settings,
    *,
    chain: Chain | None = None,
    run: Run | None = None,
    max_failures: int | None = None,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    plan_only: bool = False,
) -> Iterator[Invocation]:
    """The command's invocation, its backend open for the block. Bad limits are refused first.
    ``plan_only`` (--plan): the command plans as it always does and stops there; it has no run."""
    if max_failures is not None and max_failures < 1:
        raise UsageError(f"--max-failures must be at least 1, not {max_failures}")
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}")
    chain = chain or load_chain()
    with open_backend(settings) as backend:
        yield Invocation(settings, chain, backend, None if plan_only else run, max_failures, jobs, shard, plan_only)

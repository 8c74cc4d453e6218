"""What a command reports per tenant: the action taken, the revisions, and the error as a value.

A failing tenant is a TenantResult with Action.FAILED, never an exception that stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from sqlalchemy.exc import SQLAlchemyError

from .errors import DocexMigrateError

ALREADY_AT_TARGET = "already at the target"


class Action(str, Enum):
    """What happened to a tenant; the value is what JSON and the summary show."""

    PROVISIONED = "provisioned"
    UPGRADED = "upgraded"
    DOWNGRADED = "downgraded"
    ADOPTED = "adopted"
    WOULD_ADOPT = "would-adopt"  # adopt --dry-run
    SKIPPED = "skipped"
    SCRIPTED = "scripted"  # upgrade --sql: its script written for review, nothing run
    FAILED = "failed"
    NOT_RUN = "not-run"  # left alone because --fail-fast / --max-failures (or an interrupt) stopped the run
    NEEDS_ADOPT = "needs-adopt"  # an unversioned tenant with tables is never migrated blindly
    DRIFTED = "drifted"  # refused by upgrade --verify-first: its catalog is not exactly its revision
    DEPROVISIONED = "deprovisioned"  # the run ledger's record of a deprovision

    def __str__(self) -> str:
        return self.value


class CheckStatus(str, Enum):
    """How a `docex-migrate check` ended: failed means the chain is wrong (exit 1), error that the
    check could not run (exit 2)."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


FAILURES = frozenset({Action.FAILED, Action.DRIFTED})  # count towards --max-failures
INCOMPLETE = FAILURES | {Action.NOT_RUN, Action.NEEDS_ADOPT}


@dataclass
class TenantResult:
    tenant_id: str
    namespace: str
    action: Action
    from_revision: str | None = None
    to_revision: str | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # e.g. adopt's repairs, or the diff it refused
    # Not reported: the database itself refused (down, or no connection left), so the run hands
    # out no more tenants.
    stops_run: bool = field(default=False, repr=False)
    # Not reported either: seconds the tenant's migration took (the run ledger records it).
    duration: float | None = field(default=None, repr=False, compare=False)
    # Not reported either: which namespace it was (Backend.identity), for the run ledger.
    identity: str | None = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.action in FAILURES

    @property
    def incomplete(self) -> bool:
        """Failed, or never attempted because the run stopped early: either way, exit 1."""
        return self.action in INCOMPLETE

    def as_dict(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "namespace": self.namespace,
            "action": self.action.value,
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
            "message": self.message,
            "warnings": self.warnings,
            "details": self.details,
        }


# What a blocked or slow migration reports, and what to do about it.
_HINTS = {
    "55P03": "an application holds a lock on the table: retry when it is idle, or raise --lock-timeout",
    "57014": "a statement ran longer than --statement-timeout",
    # SQLite, once the tenant's write lock is ours: the commit waited past --lock-timeout for
    # the application's readers (the wait for the lock itself is TenantBusyError's message).
    "database is locked": "an application is reading or writing the tenant's file: retry when it is idle, or raise --lock-timeout",
}


def describe_error(exc: BaseException) -> str:
    """One line for a failed tenant: the database's own message, without the SQL or a URL."""
    if isinstance(exc, DocexMigrateError):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        text = str(orig if orig is not None else exc)
    else:
        orig, text = None, f"{type(exc).__name__}: {exc}"
    line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    hint = _HINTS.get(getattr(orig, "sqlstate", None) or "") or _HINTS.get(line)
    return f"{line} ({hint})" if hint else line

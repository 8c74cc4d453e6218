"""`docex-migrate check` on every backend it can reach: each backend's problems show only on
its own run (a revision only PostgreSQL rejects passes on SQLite, and the other way round).

The configured backend runs every check. When it is not SQLite, the database checks (those that
migrate scratch namespaces, and the shipped snapshots of the backend kind) run once more on
SQLite files in a temporary directory, removed afterwards. Each such result names the backends
it covered, and its evidence says which backend it came from.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from . import checks
from .config import Settings
from .results import CheckResult, CheckStatus
from .revision_snapshots import kind_of
from .tempdirs import locked_directory

SQLITE = "sqlite"
# Worst first: what a check on two backends reports is the worse of its two outcomes.
_SEVERITY = (CheckStatus.FAILED, CheckStatus.ERROR, CheckStatus.PASSED, CheckStatus.SKIPPED)


def database_checks() -> set[str]:
    """The checks whose outcome depends on the backend they run on."""
    return {c.name for c in checks.CHECKS if c.scratch} | {"shipped-snapshots"}


def _merge(results: dict[str, CheckResult]) -> CheckResult:
    """One result for a check run on several backends (kind -> its result)."""
    first = next(iter(results.values()))
    status = min((r.status for r in results.values()), key=_SEVERITY.index)
    merged = CheckResult(first.name, first.statement, status, backends=list(results))
    merged.message = "; ".join(f"{kind}: {r.message}" for kind, r in results.items())
    merged.evidence = [f"{kind}: {line}" for kind, r in results.items() for line in r.evidence]
    return merged


def run_everywhere(
    settings: Settings, only: Sequence[str] | None = None, *, metadata: sa.MetaData | None = None
) -> list[CheckResult]:
    """The checks on the configured backend, and the database checks on SQLite as well."""
    primary = kind_of(settings)
    results = checks.run_checks(settings, only, metadata=metadata)
    per_backend = database_checks()
    for result in results:
        if result.name in per_backend:
            result.backends = [primary]
    again = [r.name for r in results if r.name in per_backend and r.status != CheckStatus.SKIPPED]
    if primary == SQLITE or not again:
        return results
    with locked_directory("docex_migrate_check_", sweep=True) as directory:
        on_sqlite = Settings(timeouts=settings.timeouts).with_template(f"{directory}/tenant_{{tenant_id}}/docex.db")
        second = {r.name: r for r in checks.run_checks(on_sqlite, again, metadata=metadata)}
    return [_merge({primary: r, SQLITE: second[r.name]}) if r.name in second else r for r in results]

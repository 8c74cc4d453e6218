"""The only module that drives alembic.command: one tenant in, one result out.

Alembic's ``context`` and ``op`` are module-level proxies, so a process runs one tenant's
migration at a time; parallel tenants need separate processes, never threads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from alembic import command
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from .backends import Backend
from .chain import alembic_config
from .errors import DocexMigrateError

log = logging.getLogger(__name__)

ALREADY_AT_TARGET = "already at the target"


@dataclass
class TenantResult:
    tenant_id: str
    namespace: str
    action: str  # provisioned, upgraded, downgraded, skipped, failed, not-run
    from_revision: str | None = None
    to_revision: str | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.action == "failed"

    @property
    def incomplete(self) -> bool:
        """Failed, or never attempted because the run stopped early: either way, exit 1."""
        return self.action in ("failed", "not-run")

    def as_dict(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "namespace": self.namespace,
            "action": self.action,
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
            "message": self.message,
            "warnings": self.warnings,
        }


# What a blocked or slow migration reports, and what to do about it.
_HINTS = {
    "55P03": "an application holds a lock on the table: retry when it is idle, or raise --lock-timeout",
    "57014": "a statement ran longer than --statement-timeout",
    "database is locked": "another process holds the tenant's file: retry, or raise --tenant-lock-wait",
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


def current_revision(connection: Connection, version_table_schema: str | None) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table_schema": version_table_schema})
    return context.get_current_revision()


def migrate_tenant(
    backend: Backend,
    tenant_id: str,
    target: str | None,
    *,
    downgrade: bool = False,
    create: bool = False,
) -> tuple[str | None, str | None]:
    """Bring one tenant to ``target`` (None = base) in one transaction: all steps or none.

    Returns the revisions before and after, both read inside the transaction, after the
    tenant's lock: a run that waited for another sees what that one did and skips it.
    Raises on failure; the transaction is rolled back and the tenant stays where it was.
    """
    with backend.transaction(tenant_id, create=create) as connection:
        schema = backend.schema(tenant_id)
        before = current_revision(connection, schema)
        if before == target:
            return before, before
        config = alembic_config(connection=connection, tenant_id=tenant_id, version_table_schema=schema)
        if downgrade:
            command.downgrade(config, target or "base")
        else:
            command.upgrade(config, target or "base")
        return before, current_revision(connection, schema)

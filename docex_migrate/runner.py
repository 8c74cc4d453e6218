"""The only module that drives alembic.command: one tenant in, one result out.

Alembic's ``context`` and ``op`` are module-level proxies, so a process runs one tenant's
migration at a time; parallel tenants need separate processes, never threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from alembic import command

from .backends import Backend
from .chain import alembic_config
from .errors import DocexMigrateError

log = logging.getLogger(__name__)

ALREADY_AT_TARGET = "already at the target"
T = TypeVar("T")


@dataclass
class TenantResult:
    tenant_id: str
    namespace: str
    action: str  # provisioned, upgraded, downgraded, adopted, skipped, failed, not-run, needs-adopt, would-adopt
    from_revision: str | None = None
    to_revision: str | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # e.g. adopt's repairs, or the diff it refused

    @property
    def failed(self) -> bool:
        return self.action in ("failed", "drifted")  # drifted: refused by upgrade --verify-first

    @property
    def incomplete(self) -> bool:
        """Failed, or never attempted because the run stopped early: either way, exit 1."""
        return self.action in ("failed", "not-run", "needs-adopt", "drifted")

    def as_dict(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "namespace": self.namespace,
            "action": self.action,
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


def current_revision(connection: Connection, version_table_schema: str | None, *, versioned: bool = False) -> str | None:
    """The tenant's revision. With ``versioned`` (the bulk read saw its alembic_version) one
    plain SELECT; otherwise Alembic's own check, which first asks the catalog for the table."""
    if versioned:
        table = sa.table("alembic_version", sa.column("version_num"), schema=version_table_schema)
        rows = connection.execute(sa.select(table.c.version_num)).scalars().all()
        return rows[0] if len(rows) == 1 else None
    context = MigrationContext.configure(connection, opts={"version_table_schema": version_table_schema})
    return context.get_current_revision()


def migrate_tenant(
    backend: Backend,
    tenant_id: str,
    target: str | None,
    *,
    downgrade: bool = False,
    create: bool = False,
    versioned: bool = False,
) -> tuple[str | None, str | None]:
    """Bring one tenant to ``target`` (None = base) in one transaction: all steps or none.

    Returns the revisions before and after, both read inside the transaction, after the
    tenant's lock: a run that waited for another sees what that one did and skips it.
    Raises on failure; the transaction is rolled back and the tenant stays where it was.
    """
    with backend.transaction(tenant_id, create=create) as connection:
        schema = backend.schema(tenant_id)
        before = current_revision(connection, schema, versioned=versioned)
        if before == target:
            return before, before
        config = alembic_config(connection=connection, tenant_id=tenant_id, version_table_schema=schema)
        _run_env(config, target, downgrade=downgrade)
        return before, target  # Alembic raises unless it reached the target


@cache
def _script(location: str) -> ScriptDirectory:
    """The revision scripts, parsed once per process (command.upgrade would re-read every
    revision file for every tenant)."""
    return ScriptDirectory(location)


def _run_env(config: Config, target: str | None, *, downgrade: bool) -> None:
    """What alembic.command.upgrade / downgrade do, with the process's cached ScriptDirectory.

    Uses ScriptDirectory._upgrade_revs / _downgrade_revs, the functions those commands use."""
    script = _script(config.get_main_option("script_location"))
    destination = target or "base"

    def steps(revision, context):  # noqa: ANN001, ANN202 - Alembic's callback signature
        if downgrade:
            return script._downgrade_revs(destination, revision)
        return script._upgrade_revs(destination, revision)

    with EnvironmentContext(config, script, fn=steps, destination_rev=destination):
        script.run_env()


def stamp_tenant(
    backend: Backend, tenant_id: str, revision: str, prepare: Callable[[Connection], None] | None = None
) -> None:
    """Record ``revision`` in an unversioned tenant's namespace, after ``prepare`` (a repair),
    in one transaction under the tenant's lock: both or neither."""
    with backend.transaction(tenant_id, create=False) as connection:
        schema = backend.schema(tenant_id)
        if current_revision(connection, schema) is not None:
            raise DocexMigrateError(f"tenant {tenant_id!r} was versioned by another run meanwhile; nothing done")
        if prepare is not None:
            prepare(connection)
        config = alembic_config(connection=connection, tenant_id=tenant_id, version_table_schema=schema)
        command.stamp(config, revision)


class _RollBack(Exception):
    pass


@contextmanager
def _rolled_back(backend: Backend, tenant_id: str, version_table_schema: str | None) -> Iterator[tuple[Connection, Config]]:
    """A scratch namespace's connection and Alembic config, in one transaction that is always
    rolled back: nothing is ever committed, so no other session sees the scratch namespace."""
    try:
        with backend.transaction(tenant_id, create=True) as connection:
            yield connection, alembic_config(
                connection=connection, tenant_id=tenant_id, version_table_schema=version_table_schema
            )
            raise _RollBack
    except _RollBack:
        pass


def along_chain(backend: Backend, tenant_id: str, order: list[str], take: Callable[[Connection], T]) -> dict[str, T]:
    """Migrate a scratch namespace through ``order`` one step at a time and ``take`` something
    (a snapshot) at each revision; all of it rolled back."""
    taken: dict[str, T] = {}
    with _rolled_back(backend, tenant_id, backend.schema(tenant_id)) as (connection, config):
        for revision in order:
            _run_env(config, revision, downgrade=False)
            taken[revision] = take(connection)
    return taken


Recorded = tuple[str, object]  # a statement and its parameters, as the driver received them


def record_chain(backend: Backend, tenant_id: str, target: str) -> list[Recorded]:
    """Every statement the chain sends to an empty namespace on its way to ``target``, recorded
    on a scratch namespace and rolled back. alembic_version is left unqualified here (the
    search_path places it), so no statement names the scratch namespace."""
    recorded: list[Recorded] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        recorded.append((statement, parameters))

    with _rolled_back(backend, tenant_id, None) as (connection, config):
        event.listen(connection, "before_cursor_execute", capture)
        _run_env(config, target, downgrade=False)
        event.remove(connection, "before_cursor_execute", capture)
    return recorded


def replay_chain(
    backend: Backend, tenant_id: str, recording: list[Recorded], target: str
) -> tuple[str | None, str | None] | None:
    """Provision a fresh namespace by replaying a recording of the chain up to ``target``, in
    one transaction under the tenant's lock. None (nothing done) if the namespace turns out
    not to be empty: any table, alembic_version included, means someone else got there."""
    with backend.transaction(tenant_id, create=True) as connection:
        if sa.inspect(connection).get_table_names(schema=backend.schema(tenant_id)):
            return None
        for statement, parameters in recording:
            connection.exec_driver_sql(statement, parameters or ())
        return None, target


def author_revision(backend: Backend | None, tenant_id: str, message: str, head: str) -> Path | None:
    """Write a new revision on top of ``head``. With a scratch ``backend`` it is autogenerated:
    a scratch tenant is migrated to head and compared with the package's tenant metadata.
    Returns the new file, or None when autogenerate found nothing to do (nothing is written)."""
    config = alembic_config()
    if backend is None:
        return Path(command.revision(config, message=message).path)
    migrate_tenant(backend, tenant_id, head, create=True)
    engine = backend.reflection_engine(tenant_id)  # its default schema is the scratch tenant's
    found: list[bool] = []

    def skip_empty(context, revision, directives):  # noqa: ANN001, ARG001 - Alembic's hook
        if directives[0].upgrade_ops.is_empty():
            directives[:] = []
        found.append(bool(directives))

    try:
        with engine.connect() as connection:
            config.attributes.update(connection=connection, process_revision_directives=skip_empty)
            script = command.revision(config, message=message, autogenerate=True)
            connection.commit()
    finally:
        engine.dispose()
    return Path(script.path) if script is not None and found and found[0] else None

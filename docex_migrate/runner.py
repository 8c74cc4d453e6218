"""The only module that drives Alembic: one tenant in, one result out.

Alembic's ``context`` and ``op`` are module-level proxies, so a process runs one tenant's
migration at a time; parallel tenants need separate processes, never threads.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.ddl.impl import DefaultImpl
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script
from sqlalchemy import event
from sqlalchemy.engine import Connection

from .chain import BASE, Chain, alembic_config, load_chain
from .environment import context_options
from .errors import RecognitionError, TenantMovedError, UnsupportedStepError
from .statements import Recorded, Recording, version_rows

if TYPE_CHECKING:  # the backends call into this module; it only needs their type
    from .backends import Backend

log = logging.getLogger(__name__)

T = TypeVar("T")


def current_revision(connection: Connection, version_table_schema: str | None, *, versioned: bool = False) -> str | None:
    """The tenant's revision. With ``versioned`` (the bulk read saw its alembic_version) one
    plain SELECT; otherwise Alembic's own check, which first asks the catalog for the table."""
    if versioned:
        rows = version_rows(connection, version_table_schema)
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
    expect: str | None = None,
    expect_identity: str | None = None,
    chain: Chain | None = None,
) -> tuple[str | None, str | None, str | None]:
    """Bring one tenant to ``target`` (None = base) in one transaction: all steps or none.

    Returns the revisions before and after, both read inside the transaction, after the
    tenant's lock: a run that waited for another sees what that one did and skips it; and the
    identity of the namespace migrated (Backend.identity), read there too.
    Raises on failure; the transaction is rolled back and the tenant stays where it was.
    ``expect`` (undo): the revision (or BASE) the tenant must still be at, read under its lock,
    and ``expect_identity`` the namespace it must still be (not one created again since);
    TenantMovedError otherwise.
    """
    with backend.migration(tenant_id, create=create, versioned=versioned) as (connection, heads):
        schema = backend.schema(tenant_id)
        if heads is None:
            before = current_revision(connection, schema)
        else:
            before = heads[0] if len(heads) == 1 else None
        if expect is not None and (before or BASE) != expect:
            raise TenantMovedError(before, expect)
        identity = backend.identity(tenant_id, connection)
        if expect is not None and expect_identity is not None and identity != expect_identity:
            raise TenantMovedError(before, expect, recreated=True)
        if before == target:
            return before, before, identity
        config = alembic_config(connection=connection, tenant_id=tenant_id, version_table_schema=schema)
        _drive(chain or load_chain(), config, target, downgrade=downgrade, heads=heads)
        return before, target, identity  # Alembic raises unless it reached the target


class _TenantContext(MigrationContext):
    """A MigrationContext told what the caller has just read in the same transaction: the
    version rows (so Alembic does not read them again) and so that the version table exists
    (Alembic would ask the catalog up to three times per run), and whose version table is one
    cheap to have (_version_table). Overrides three methods, two of them private, and the impl
    attribute, deliberately, like _steps' use of _upgrade_revs: bound to Alembic 1.x."""

    def __init__(
        self, connection: Connection, opts: dict[str, Any], environment: EnvironmentContext, heads: tuple[str, ...] | None
    ) -> None:
        # Set first: MigrationContext.__init__ builds the version table (the impl setter below).
        self.known_heads, self.version_table_exists = heads, heads is not None
        super().__init__(connection.dialect, connection, opts, environment)  # as MigrationContext.configure does

    def get_current_heads(self) -> tuple[str, ...]:
        heads, self.known_heads = self.known_heads, None  # only for run_migrations' first read
        return heads if heads is not None else super().get_current_heads()

    @contextmanager
    def autocommit_block(self) -> Iterator[None]:
        # Alembic's version asserts (it finds no transaction of its own here) and, if it ran,
        # would commit mid-revision: ending the tenant's lock and its SET LOCAL search_path, so
        # the rest of the revision would run unlocked and outside the tenant's schema.
        raise UnsupportedStepError(
            "autocommit_block() is not supported: each tenant's upgrade is one transaction under its lock;"
            " run the step outside the chain (e.g. CREATE INDEX CONCURRENTLY by hand) or inside the transaction"
        )
        yield  # unreachable: makes this a generator, as Alembic's is

    def _has_version_table(self) -> bool:
        return self.version_table_exists or super()._has_version_table()

    def _ensure_version_table(self, purge: bool = False) -> None:
        if purge or not self.version_table_exists:
            super()._ensure_version_table(purge)

    @property
    def impl(self) -> DefaultImpl:
        return self._impl

    @impl.setter
    def impl(self, impl: DefaultImpl) -> None:
        # MigrationContext.__init__ assigns its impl here, then asks it for the version Table:
        # see _version_table.
        impl.version_table_impl = partial(_version_table, impl.version_table_impl, self.version_table_exists)  # type: ignore[method-assign,assignment]
        self._impl = impl


_last_version_table: list[tuple[tuple[Any, ...], sa.Table]] = []


def _version_table(build: Callable[..., sa.Table], exists: bool, **options: Any) -> sa.TableClause:
    """The version table for ``options``. SQLite's tenants (no schema) share one Table, the last
    one built: building it cost ~0.07 ms, and every version UPDATE on a new Table object missed
    SQLAlchemy's compiled cache (~0.15 ms). A PostgreSQL tenant's names its own schema, so each
    gets its own: when the table exists, a plain table clause (~0.01 ms against ~0.15 ms for a
    Table), since Alembic then only reads and writes its rows (creating it needs the Table).
    A placeholder schema rendered through schema_translate_map was tried for one shared
    PostgreSQL table: a revision that sets its own map would have lost ours."""
    schema = options.get("version_table_schema")
    if schema is not None and exists:
        return sa.table(options["version_table"], sa.column("version_num", sa.String(32)), schema=schema)
    key = (getattr(build, "__func__", build), *sorted(options.items()))
    if not _last_version_table or _last_version_table[0][0] != key:
        _last_version_table[:] = [(key, build(**options))]
    return _last_version_table[0][1]


def _steps(chain: Chain, heads: Any, destination: str, downgrade: bool) -> Any:
    """The steps from ``heads`` to ``destination``, computed once per process and pair.

    Deliberately uses ScriptDirectory._upgrade_revs / _downgrade_revs, the private functions
    alembic.command.upgrade / downgrade use (as pytest-alembic does). Bound to the Alembic
    major version tested (pyproject.toml). The steps are immutable, so they are shared."""
    script = chain.script

    def compute() -> Any:
        if downgrade:
            return script._downgrade_revs(destination, heads)
        return script._upgrade_revs(destination, heads)

    return chain.cached(f"steps:{','.join(heads or ())}>{destination}:{'down' if downgrade else 'up'}", compute)


def _drive(chain: Chain, config: Config, target: str | None, *, downgrade: bool, heads: tuple[str, ...] | None = None) -> None:
    """What env.py does for one tenant, without loading env.py: one MigrationContext on the
    tenant's connection (from ``config.attributes``), inside the caller's transaction.

    A revision sees what it saw through env.py: ``op.get_context()`` is this context, whose
    ``.config.attributes`` hold the tenant id, its connection and its version_table_schema, and
    ``alembic.context`` is this run's EnvironmentContext. ``heads``: the version rows just read
    in this transaction, when the version table exists."""
    destination = target or "base"

    def steps(current: Any, context: Any) -> Any:  # Alembic's callback signature
        return _steps(chain, tuple(current), destination, downgrade)

    attributes = config.attributes
    environment = EnvironmentContext(config, chain.script, fn=steps, destination_rev=destination)
    with environment:  # installs alembic.context for this run
        options = {**context_options(attributes.get("version_table_schema")), **environment.context_opts}
        connection: Connection = attributes["connection"]
        context = _TenantContext(connection, options, environment, heads)
        environment._migration_context = context  # deliberate: what EnvironmentContext.configure sets
        with Operations.context(context):
            context.run_migrations()


def stamp_tenant(backend: Backend, tenant_id: str, revision: str, prepare: Callable[[Connection], None] | None = None) -> None:
    """Record ``revision`` in an unversioned tenant's namespace, after ``prepare`` (a repair),
    in one transaction under the tenant's lock: both or neither."""
    with backend.transaction(tenant_id, create=False) as connection:
        schema = backend.schema(tenant_id)
        if current_revision(connection, schema) is not None:
            raise RecognitionError(f"tenant {tenant_id!r} was versioned by another run meanwhile; nothing done")
        if prepare is not None:
            prepare(connection)
        config = alembic_config(connection=connection, tenant_id=tenant_id, version_table_schema=schema)
        command.stamp(config, revision)


class _RolledBack(Exception):
    """Leaves a transaction that must never commit: the one way this package rolls back on purpose."""


@contextmanager
def rolled_back(transaction: Callable[[], Any]) -> Iterator[Connection]:
    """The connection of ``transaction()`` (a backend transaction context manager), rolled back
    at the end whatever happens: nothing is committed, so no other session sees anything."""
    try:
        with transaction() as connection:
            yield connection
            raise _RolledBack
    except _RolledBack:
        pass


@contextmanager
def _scratch_run(backend: Backend, tenant_id: str, version_table_schema: str | None) -> Iterator[tuple[Connection, Config]]:
    """A scratch namespace's connection and Alembic config, in a transaction that is rolled back."""
    with rolled_back(lambda: backend.transaction(tenant_id, create=True)) as connection:
        yield connection, alembic_config(connection=connection, tenant_id=tenant_id, version_table_schema=version_table_schema)


def along_chain(
    backend: Backend, tenant_id: str, chain: Chain, order: list[str], take: Callable[[Connection], T]
) -> dict[str, T]:
    """Migrate a scratch namespace through ``order`` one step at a time and ``take`` something
    (a catalog snapshot) at each revision; all of it rolled back."""
    taken: dict[str, T] = {}
    with _scratch_run(backend, tenant_id, backend.schema(tenant_id)) as (connection, config):
        for revision in order:
            _drive(chain, config, revision, downgrade=False)
            taken[revision] = take(connection)
    return taken


def walk_chain(
    backend: Backend,
    tenant_id: str,
    chain: Chain,
    steps: list[tuple[str | None, bool]],
    take: Callable[[Connection, str | None, bool], None],
    before: Callable[[Connection], None] = lambda connection: None,
) -> None:
    """Migrate a scratch namespace to each (target, downgrade) of ``steps`` in turn, calling
    ``before`` once the transaction is open and ``take`` after each step; all of it rolled back."""
    with _scratch_run(backend, tenant_id, backend.schema(tenant_id)) as (connection, config):
        before(connection)
        for target, downgrade in steps:
            _drive(chain, config, target, downgrade=downgrade)
            take(connection, target, downgrade)


def record_chain(backend: Backend, tenant_id: str, chain: Chain, target: str) -> Recording:
    """Every statement the chain sends to an empty namespace on its way to ``target``, recorded
    on a scratch namespace and rolled back. alembic_version is left unqualified here (the
    search_path places it), so no statement names the scratch namespace."""
    recorded: Recording = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        recorded.append((statement, parameters))

    with _scratch_run(backend, tenant_id, None) as (connection, config):
        event.listen(connection, "before_cursor_execute", capture)
        _drive(chain, config, target, downgrade=False)
        event.remove(connection, "before_cursor_execute", capture)
    return recorded


def author_revision(backend: Backend | None, tenant_id: str, message: str, head: str) -> Path | None:
    """Write a new revision on top of ``head``. With a scratch ``backend`` it is autogenerated:
    a scratch tenant is migrated to head and compared with the package's tenant metadata.
    Returns the new file, or None when autogenerate found nothing to do (nothing is written)."""
    config = alembic_config()
    if backend is None:
        written = command.revision(config, message=message)
        assert isinstance(written, Script)  # one head: one new script
        return Path(written.path)
    migrate_tenant(backend, tenant_id, head, create=True)
    engine = backend.reflection_engine(tenant_id)  # its default schema is the scratch tenant's
    found: list[bool] = []

    def skip_empty(context: Any, revision: Any, directives: list[Any]) -> None:  # Alembic's hook
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
    if not (isinstance(script, Script) and found and found[0]):
        return None
    return Path(script.path)


_READS = ("select", "pragma", "begin")  # reads, and the transaction the script opens itself


def record_migration(
    backend: Backend, tenant_id: str, chain: Chain, target: str | None, *, downgrade: bool = False, create: bool = False
) -> list[Recorded]:
    """The statements that change the tenant, as migrate_tenant sends them to ``backend``'s
    tenant (a copy made for review: it is really migrated)."""
    recorded: list[Recorded] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not statement.lstrip().lower().startswith(_READS):
            recorded.append((statement.strip(), parameters))

    event.listen(sa.engine.Engine, "before_cursor_execute", capture)  # the engine is made inside
    try:
        migrate_tenant(backend, tenant_id, target, chain=chain, downgrade=downgrade, create=create)
    finally:
        event.remove(sa.engine.Engine, "before_cursor_execute", capture)
    return recorded


def render_offline(
    revision: str,
    down: str | None,
    *,
    dialect: str,
    downgrade: bool = False,
    offline_tables: Callable[[str], sa.Table] | None = None,
) -> str:
    """The SQL of one step, rendered without a database (Alembic's --sql), for ``dialect``.
    SQLite's batch rebuilds need each table's definition: ``offline_tables`` gives it."""
    buffer = io.StringIO()
    config = alembic_config(output_buffer=buffer, dialect_name=dialect, offline_tables=offline_tables)
    if downgrade:
        command.downgrade(config, f"{revision}:{down or 'base'}", sql=True)
    else:
        command.upgrade(config, f"{down}:{revision}" if down else revision, sql=True)
    return buffer.getvalue()

"""What every backend provides: tenant namespaces, their discovery, and scoped transactions;
and the values they answer with (NamespaceState, CatalogRead, LedgerPlace, FreshTemplate).

Backends import only the vocabulary (config, tenants, chain, errors, statements, ...) and this
module: never the runner, the API, the ledger or the CLI, which call into them."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

from sqlalchemy.engine import Connection, Engine

from ..errors import DeprovisionRefusedError, DocexMigrateError
from ..statements import Recording, version_rows
from ..tenants import TemplateMatcher
from ..timestamps import timestamp


@dataclass(frozen=True)
class HeadDump:
    """The head namespace as SQL (PostgreSQL: pg_dump of a scratch schema the chain migrated:
    tables, rows, sequence values, functions, triggers, grants and comments). ``schema``, the
    scratch schema's name (unique and random, so it names nothing else), stands where the
    tenant's goes."""

    sql: str
    schema: str

    def for_schema(self, quoted: str) -> str:
        return self.sql.replace(self.schema, quoted)


# What a fresh tenant gets (see fresh.py), built once per process from the chain itself and sent
# to --jobs workers: the head file to copy (SQLite), the head schema's dump or else the chain's
# recorded statements to replay (PostgreSQL).
FreshTemplate: TypeAlias = Path | HeadDump | Recording


@dataclass(frozen=True)
class NamespaceState:
    """What a tenant's namespace holds, read without starting Alembic."""

    exists: bool
    versioned: bool = False  # has an alembic_version table (empty when at base)
    revisions: tuple[str, ...] = ()  # the rows of alembic_version
    table_count: int = 0  # tables other than alembic_version (PostgreSQL counts them only when not versioned)
    error: str | None = None  # the namespace exists but cannot be read: that tenant's failure alone
    identity: str | None = None  # which namespace this is, not which name (Backend.identity)


MISSING = NamespaceState(exists=False)


@dataclass(frozen=True)
class CatalogRead:
    """A tenant's state and a fingerprint of its catalog (see fingerprints.py): two namespaces
    with the same fingerprint have the same snapshot. None: no fingerprint (missing,
    unreadable, or a backend without one), so the tenant is compared on its own."""

    state: NamespaceState
    fingerprint: str | None = None


@dataclass(frozen=True)
class LedgerPlace:
    """Where the run ledger (ledger.py) lives: beside the tenants, never one of them."""

    schema: str | None  # the tool's own schema (PostgreSQL); None: a file of its own (SQLite)
    where: str  # for messages
    # Which fleet the runs belong to: the database as the server identifies it (never as the
    # host is spelled: localhost and 127.0.0.1 are one database) and the template; no password.
    database: str
    exists: Callable[[], bool]  # whether the ledger is there, found without creating anything
    engine: Callable[[bool], Engine]  # an engine on it: for writing (True; creates it) or for reading
    # When an error is the ledger's bounded wait for a lock running out (Backend.ledger_lock_wait):
    # one line saying which lock it waited for and, where the database tells, who holds it.
    explain_wait: Callable[[BaseException], str | None] = lambda exc: None
    aliases: tuple[str, ...] = ()  # how older docex-migrates recorded this fleet: their runs are still its own

    @property
    def fleets(self) -> tuple[str, ...]:
        return (self.database, *self.aliases)


# Why a revision that ends the tenant's transaction fails (each backend's guard: see there).
ENDING_REFUSED = (
    "ending the tenant's transaction is not supported: each tenant's upgrade is one transaction under its lock;"
    " remove the revision's COMMIT or ROLLBACK (run non-transactional steps outside the chain)"
)


def unreadable(reason: str) -> NamespaceState:
    """A namespace that exists but cannot be read (corrupt file, no privilege, odd version table)."""
    return NamespaceState(exists=True, error=reason)


class Backend(ABC):
    """One database holding one namespace per tenant.

    Everything that differs between databases is answered here, as Alembic's dialect ``impl``
    answers for it: callers never ask which backend they have."""

    kind: str  # "sqlite" or "postgresql": the SQLAlchemy dialect name, and the key of shipped snapshots
    template: str
    # Seconds a ledger statement waits for a lock (another run's write, an operator's LOCK TABLE):
    # past it, reading fails with one line naming the lock, and a run goes on unrecorded.
    ledger_lock_wait: float = 30.0

    @cached_property
    def matcher(self) -> TemplateMatcher:
        return TemplateMatcher(self.template)

    def tenant_of(self, namespace: str) -> str | None:
        """The tenant a namespace belongs to, or None if it is not a valid tenant namespace
        (e.g. 'public' under the template '{tenant_id}', which is reserved)."""
        tenant_id = self.matcher.tenant_id(namespace)
        if tenant_id is None:
            return None
        try:
            return tenant_id if self.namespace(tenant_id) == namespace else None
        except DocexMigrateError:
            return None

    @abstractmethod
    def namespace(self, tenant_id: str) -> str:
        """The tenant's schema name or file path; raises InvalidTenantError for a refused id."""

    @abstractmethod
    def discover(self) -> list[str]:
        """Tenant ids whose namespace exists, sorted. Never creates anything."""

    @abstractmethod
    def read_states(self, tenant_ids: Iterable[str]) -> dict[str, NamespaceState]:
        """Each tenant's namespace state, in few round trips and read-only."""

    @abstractmethod
    def transaction(self, tenant_id: str, *, create: bool) -> AbstractContextManager[Connection]:
        """A connection inside one transaction, scoped to the tenant's namespace only.

        With ``create`` the namespace is created first, in the same transaction where the
        database allows it, and removed again if the transaction fails.
        """

    @contextmanager
    def migration(self, tenant_id: str, *, create: bool, versioned: bool) -> Iterator[tuple[Connection, tuple[str, ...] | None]]:
        """transaction(), with what a migration starts from: with ``versioned`` (the bulk read
        saw the tenant's alembic_version) its version rows, read after the tenant's lock, else
        None (the caller asks Alembic, which first looks for the table)."""
        with self.transaction(tenant_id, create=create) as connection:
            yield connection, version_rows(connection, self.schema(tenant_id)) if versioned else None

    def identity(self, tenant_id: str, connection: Connection) -> str | None:
        """Which namespace the tenant's is, read in its transaction (under its lock): it differs
        once the namespace is dropped and created again under the same name, so a run never
        undoes its work on a tenant that is not the one it touched. None: not known."""
        return None

    @abstractmethod
    def schema(self, tenant_id: str) -> str | None:
        """The schema that qualifies the tenant's objects for Alembic's version table and for
        reflection: the tenant's schema on PostgreSQL, None on SQLite (one file, one namespace)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the tenants live, for messages; never includes a password."""

    @abstractmethod
    def reflection_engine(self, tenant_id: str) -> Engine:
        """An engine whose default schema is the tenant's, for reflection and autogenerate
        (which look at the dialect's default schema). Only for reading and scratch work."""

    @abstractmethod
    def deprovision(self, tenant_id: str, backup_dir: Path | None) -> Path | None:
        """Remove the tenant's namespace and everything in it, after writing a backup into
        ``backup_dir`` (None: no backup) and checking that it holds exactly what is removed.

        Backup and removal happen under one lock that keeps the application's writes out, so
        no commit can fall between them. Raises DeprovisionRefusedError, with nothing removed
        and no backup kept, when that cannot be guaranteed."""

    @abstractmethod
    def restore(self, tenant_id: str, backup: Path, revision: str | None, sha256: str) -> str | None:
        """Bring a deprovisioned tenant back from its deprovision's ``backup``, atomically: the
        namespace appears whole (checked: what is loaded has the ``sha256`` recorded, and every
        object and row the backup holds is there, the version rows saying ``revision``) or not
        at all. Returns its identity (see identity()).
        RestoreRefusedError (exit 2), nothing changed, when the tenant exists (any trace of its
        namespace) or the backup does not hold exactly that tenant at that revision."""

    def kept_by_deprovision(self, tenant_id: str) -> list[str]:
        """What deprovision would neither back up nor remove, for the operator to see to."""
        return []

    @abstractmethod
    def with_template(self, template: str) -> Backend:
        """The same database and settings, with tenants at another template (scratch work)."""

    @abstractmethod
    def scratch_template(self, *, committed: bool = False) -> AbstractContextManager[str]:
        """A template for scratch namespaces beside the real tenants, never matched by the real
        template, removed at the end. ``committed``: the caller commits scratch namespaces, so
        they are held by a lock while in use, and abandoned ones (a killed run) are swept first."""

    @abstractmethod
    def fresh_workspace(self) -> AbstractContextManager[Backend | str]:
        """Where fresh.py builds a fresh template: a scratch backend whose namespaces it may
        migrate and commit, kept as long as the template needs them; or why no template can be
        captured here (fresh tenants then get the chain's recording: install_fresh)."""

    @abstractmethod
    def capture_head(self, tenant_id: str, target: str) -> FreshTemplate | str:
        """On a fresh_workspace backend: what a fresh tenant gets, captured from the namespace
        of ``tenant_id``, which the chain has just migrated to ``target`` and committed; or why
        it cannot be had."""

    @abstractmethod
    def install_fresh(self, tenant_id: str, template: FreshTemplate, target: str) -> str | None:
        """Make an empty or missing namespace exactly what the chain produces at ``target``
        (from a capture_head template, or a recording of the chain on a backend that replays
        one), atomically, under the tenant's lock, and return its identity (see identity()). None
        (nothing done) when the namespace turns out not to be empty: the caller then takes the
        ordinary path."""

    def kept_fresh(self, chain_fingerprint: str, build: Callable[[], FreshTemplate]) -> FreshTemplate:
        """The fresh template kept in the database for this chain (see fresh.py), else
        ``build()``'s, kept for the next command where the backend keeps one (PostgreSQL: its
        head dump costs two whole-catalog pg_dumps). By default nothing is kept."""
        return build()

    def stored_fresh(self, chain_fingerprint: str) -> FreshTemplate | None:
        """The fresh template a command kept for this chain, verified, or None; never builds."""
        return None

    def reusing_connection(self) -> AbstractContextManager[None]:
        """A block in which transaction() may reuse one connection from tenant to tenant (for
        a run over many tenants); outside it every transaction has its own."""
        return nullcontext()

    @abstractmethod
    def review_script(self, tenant_id: str, revision: str | None, body: str, *, versioned: bool, path: Path) -> str:
        """The script a DBA reviews and runs for one tenant (upgrade --sql) with the database's
        own shell, which it tells to stop at the first error: ``body`` (unqualified SQL) inside
        the tenant's own transaction, with the same lock, scope, timeouts and session settings
        the tool's own connection has (whatever the shell's startup file set), and a guard that
        stops it unless the tenant is still as rendered: at ``revision``, or at base with an
        empty alembic_version (``versioned``) or none at all. Its header gives the command that
        runs it from the working directory, the script being written to ``path``."""

    def combined_script(self, scripts: list[str]) -> str | None:
        """One script applying the tenants' scripts in order, where one session can reach
        them all (PostgreSQL); None where each tenant is its own database (SQLite)."""
        return None

    @contextmanager
    def review_shadow(self, tenant_id: str) -> Iterator[Backend | None]:
        """A copy of the tenant to migrate along while its steps are rendered offline, for
        dialects whose batch operations need each table as it is (SQLite); None elsewhere."""
        yield None

    def outside_snapshot(self) -> dict[str, Any] | None:
        """A catalog snapshot of what lies outside every tenant (PostgreSQL's public schema), to
        prove migrations put nothing there; None where tenants share nothing."""
        return None

    def version_rows(self, tenant_id: str) -> tuple[str, ...] | None:
        """The rows of the tenant's alembic_version, read the cheapest way the database allows
        (first_access.py: on every request of an application); None when they cannot be read
        so (no namespace, no version table, no privilege, any error). Never creates anything."""
        state = self.read_states([tenant_id])[tenant_id]
        return state.revisions if state.versioned and not state.error else None

    def read_catalogs(self, tenant_ids: Iterable[str]) -> dict[str, CatalogRead]:
        """Each tenant's state and catalog fingerprint, in few round trips and read-only.
        By default no fingerprint: every tenant is then compared on its own."""
        return {t: CatalogRead(state) for t, state in self.read_states(tenant_ids).items()}

    def connection_budget(self) -> int:
        """How many more connections the database allows us (for --jobs)."""
        return 1 << 16

    def warnings_for(self, tenant_id: str) -> Iterator[str]:
        """Non-fatal remarks about a tenant's namespace (e.g. what DocEX's runtime refuses)."""
        return iter(())

    def ledger(self) -> LedgerPlace:
        """Where this fleet's run ledger lives (see ledger.py)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no run ledger")

    def dispose(self) -> None:  # noqa: B027 - an optional hook: most backends hold nothing
        """Release pooled resources."""


def new_backup_file(tenant_id: str, directory: Path, suffix: str) -> Path:
    """A fresh, empty file for a tenant's backup, created now (the directory too, on first use)
    so that a directory that cannot be written (read-only storage, no permission) is refused
    before anything else is done. Its path is absolute: the ledger and the advice that name it
    must hold from any working directory. Readable by its owner only (0600; a directory we
    create, 0700): it holds the tenant's whole data. An existing directory's mode is left alone."""
    directory = directory.absolute()
    target = directory / f"{tenant_id}-{timestamp()}{suffix}"
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        target.touch(mode=0o600, exist_ok=False)  # the backups write into this file, keeping its mode
    except OSError as exc:
        raise backup_failed(tenant_id, exc, directory) from None
    return target


def sha256_of(path: Path) -> str:
    """A file's SHA-256, read in chunks (a backup can be a tenant's whole data): what the run
    ledger records of a backup, and what restore proves it loads."""
    with path.open("rb") as file:
        return copy_hashing(file, None)


def copy_hashing(source: BinaryIO, target: BinaryIO | None) -> str:
    """The SHA-256 of what is read from ``source`` (to its end, 1 MiB at a time), each chunk
    written to ``target`` as it is hashed (None: hashed only). What is written is what was
    hashed, so a copy is proven by the digest even while the source changes."""
    digest = hashlib.sha256()
    while chunk := source.read(1 << 20):
        digest.update(chunk)
        if target is not None:
            target.write(chunk)
    return digest.hexdigest()


def discard_backup(backup: Path | None) -> None:
    """Remove a backup of a tenant left untouched (it would only mislead). Best effort: failing
    to remove it must not hide why the tenant was left as it was."""
    if backup is not None:
        with suppress(OSError):
            backup.unlink(missing_ok=True)


def backup_failed(tenant_id: str, exc: OSError, directory: Path | None = None) -> DeprovisionRefusedError:
    where = f" in {directory}" if directory is not None else f" to {exc.filename}" if exc.filename else ""
    return DeprovisionRefusedError(
        f"tenant {tenant_id!r}: the backup could not be written{where} ({exc.strerror or exc}): "
        "choose a writable --backup-dir; nothing dropped"
    )

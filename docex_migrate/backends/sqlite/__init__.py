"""SQLite: one database file per tenant, at DocEX's ``path_template``.

SqliteBackend answers Backend's questions; its jobs live beside it: files.py (a file's identity,
reading it on any storage, who holds it), transactions.py (the tenant's write lock and
transaction), deprovision.py (backup and deletion under one lock), restore.py (a backup copied,
checked and linked into place) and staging.py (a file staged beside a tenant's before it is linked
into place, private and held while in use; what a killed run left of one)."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from ... import tenants
from ...chain import VERSION_TABLE
from ...config import Timeouts
from ...errors import TenantBusyError, TenantNotFoundError
from ...tempdirs import held_for_process, locked_directory
from ..base import Backend, CatalogRead, FreshTemplate, LedgerPlace, NamespaceState
from .deprovision import deprovision_file
from .files import connect_for_reading, file_identity, read_namespace_state, read_sqlite_catalog
from .restore import restore_file
from .staging import link_into_place, staged_beside, strangers
from .transactions import FOREVER, kept_open, ms, transactional_engine

__all__ = ["SqliteBackend", "connect_for_reading", "file_identity", "read_namespace_state", "transactional_engine"]

# Settings that change what a migration's statements do, which a sqlite3 shell's ~/.sqliterc or
# -cmd may have changed (foreign_keys on: a batch rebuild's DROP TABLE deletes every child row
# declared ON DELETE CASCADE). docex-migrate's connections keep the library's defaults.
_SESSION_PRAGMAS = ("foreign_keys", "legacy_alter_table", "recursive_triggers", "reverse_unordered_selects")


def _session_pragmas() -> list[str]:
    """The tool's own settings, as statements (before BEGIN: foreign_keys is fixed inside one)."""
    with closing(sqlite3.connect(":memory:")) as db:
        return [f"PRAGMA {name} = {db.execute(f'PRAGMA {name}').fetchone()[0]};" for name in _SESSION_PRAGMAS]


class SqliteBackend(Backend):
    kind = "sqlite"

    def __init__(self, path_template: str, timeouts: Timeouts | None = None) -> None:
        tenants.validate_path_template(path_template)
        self.template = path_template
        self.timeouts = timeouts or Timeouts()
        # One engine for every tenant's file (creating one per file cost ~0.6 ms a tenant); each
        # transaction still opens and closes its own connection on its tenant's file.
        self._file: ContextVar[str] = ContextVar("tenant_file")
        self._engine: Engine | None = None

    def namespace(self, tenant_id: str) -> str:
        return tenants.sqlite_path(self.template, tenant_id)

    def discover(self) -> list[str]:
        paths = glob.glob(self.matcher.glob_pattern())
        return sorted({t for t in map(self.tenant_of, paths) if t and os.path.isfile(self.namespace(t))})

    def read_states(self, tenant_ids: Iterable[str]) -> dict[str, NamespaceState]:
        return {t: read_namespace_state(self.namespace(t)) for t in tenant_ids}

    def read_catalogs(self, tenant_ids: Iterable[str]) -> dict[str, CatalogRead]:
        return {t: CatalogRead(*read_sqlite_catalog(self.namespace(t))) for t in tenant_ids}

    @contextmanager
    def transaction(self, tenant_id: str, *, create: bool) -> Iterator[Connection]:
        path = Path(self.namespace(tenant_id))
        if not create:
            self._existing(tenant_id)
        else:
            # A provision that fails leaves at most an empty file: deleting it could pull it from
            # under a concurrent provision of the same tenant. The next run provisions it.
            path.parent.mkdir(parents=True, exist_ok=True)
        if self._engine is None:
            wait = min(self.timeouts.tenant_lock_wait or FOREVER, FOREVER)
            self._engine = transactional_engine(self._file, busy_timeout=wait, lock_timeout=self.timeouts.lock_timeout)
        opening = self._file.set(str(path))
        try:
            with self._engine.connect() as connection, connection.begin(), kept_open(connection):
                yield connection
        finally:
            self._file.reset(opening)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def with_template(self, template: str) -> SqliteBackend:
        return SqliteBackend(template, self.timeouts)

    @contextmanager
    def scratch_template(self, *, committed: bool = False) -> Iterator[str]:
        with locked_directory("docex_migrate_check_", sweep=committed) as directory:
            yield f"{directory}/t_{{tenant_id}}.db"

    @contextmanager
    def fresh_workspace(self) -> Iterator[Backend | str]:
        """A directory held for the life of the process (a killed process's directory is swept
        by the next one): the head file built there is the template."""
        workspace = SqliteBackend(f"{held_for_process('docex_migrate_template_')}/{{tenant_id}}.db")
        try:
            yield workspace
        finally:
            workspace.dispose()

    def capture_head(self, tenant_id: str, target: str) -> FreshTemplate | str:
        """The head file itself: a copy of it is exactly what the chain produced."""
        return Path(self.namespace(tenant_id))

    def install_fresh(self, tenant_id: str, template: FreshTemplate, target: str) -> str | None:
        """Put a copy of the head file in place as the tenant's file, atomically and never over
        an existing file (a concurrent provision, or an empty file left by a failed one)."""
        assert isinstance(template, Path), "SQLite's fresh tenants get the head file (capture_head)"
        path = Path(self.namespace(tenant_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # the copy itself may fail (a full disk): the staged file goes either way
            with staged_beside(path, "provisioning") as (staged, fd):
                shutil.copyfile(template, staged)
                link_into_place(staged, fd, path)
            return file_identity(str(path))
        except FileExistsError:
            return None

    def review_script(self, tenant_id: str, revision: str | None, body: str, *, versioned: bool, path: Path) -> str:
        # For the sqlite3 shell: without `.bail on` it reports an error and goes on with the next
        # statement (and COMMITs); with it, it exits non-zero and the open transaction is lost.
        # SQLite has no way to raise from plain SQL but a constraint: the guard row must be true.
        stale = f"tenant {tenant_id} is no longer at {revision or 'base'}: render the script again"
        if versioned:
            as_rendered = f"coalesce((SELECT group_concat(version_num) FROM {VERSION_TABLE}), '') = '{revision or ''}'"
        else:
            as_rendered = f"NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{VERSION_TABLE}')"
        command = f"sqlite3 {shlex.quote(self.namespace(tenant_id))} < {shlex.quote(str(path))}"
        return "\n".join([
            f"-- docex-migrate upgrade --sql: tenant {tenant_id}, file {self.namespace(tenant_id)}, from {revision or 'base'}",
            f"-- Run it with the sqlite3 shell (the script makes it stop at the first error): {command}",
            ".bail on",
            *_session_pragmas(),
            f".timeout {ms(self.timeouts.tenant_lock_wait)}",
            "BEGIN IMMEDIATE;",
            f".timeout {ms(self.timeouts.lock_timeout)}",  # the write lock is ours: later waits are short
            # SQLite's error names the failing constraint: the name is the message
            f'CREATE TEMP TABLE docex_migrate_guard (as_rendered INTEGER NOT NULL CONSTRAINT "{stale}" CHECK (as_rendered));',
            f"INSERT INTO docex_migrate_guard SELECT {as_rendered};",
            "DROP TABLE docex_migrate_guard;",
            body.strip(),
            "COMMIT;",
            "",
        ])  # fmt: skip

    @contextmanager
    def review_shadow(self, tenant_id: str) -> Iterator[Backend | None]:
        """A copy of the tenant's file (SQLite's backup API: consistent while in use)."""
        with locked_directory("docex_migrate_review_", sweep=True) as directory:
            shadow = SqliteBackend(f"{directory}/{{tenant_id}}.db", self.timeouts)
            source = sqlite3.connect(Path(self._existing(tenant_id)).resolve().as_uri() + "?mode=ro", uri=True)
            try:
                with sqlite3.connect(shadow.namespace(tenant_id)) as copy:
                    source.backup(copy)
                copy.close()
            finally:
                source.close()
            yield shadow

    def reflection_engine(self, tenant_id: str) -> Engine:
        return create_engine(f"sqlite:///{self._existing(tenant_id)}", poolclass=NullPool)

    def deprovision(self, tenant_id: str, backup_dir: Path | None) -> Path | None:
        """See deprovision.py: backup and deletion under one write lock, never while another
        connection has the file open."""
        return deprovision_file(tenant_id, Path(self._existing(tenant_id)), backup_dir, self.timeouts)

    def kept_by_deprovision(self, tenant_id: str) -> list[str]:
        """In a directory of the tenant's own (the template's directory names the tenant), what
        would keep it: files deprovision does not know as its own (staging.strangers)."""
        if tenants.PLACEHOLDER not in os.path.dirname(self.template):
            return []  # a directory the tenants share: what else it holds is not this tenant's business
        return strangers(Path(self.namespace(tenant_id)))

    def restore(self, tenant_id: str, backup: Path, revision: str | None, sha256: str) -> str | None:
        """See restore.py: a checked copy linked into place, never over anything there."""
        return restore_file(tenant_id, Path(self.namespace(tenant_id)), backup, revision, sha256)

    def _existing(self, tenant_id: str) -> str:
        path = self.namespace(tenant_id)
        if not os.path.isfile(path):
            raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist ({path} is missing)")
        return path

    def schema(self, tenant_id: str) -> str | None:
        return None

    def identity(self, tenant_id: str, connection: Connection) -> str | None:
        return file_identity(self.namespace(tenant_id))

    def describe(self) -> str:
        return f"SQLite files {self.template}"

    def ledger(self) -> LedgerPlace:
        """One SQLite file in the template's fixed directory (tenants.ledger_file), in WAL mode
        with synchronous=NORMAL: a commit survives a killed process without an fsync per row."""
        path = tenants.ledger_file(self.template)
        wait = self.ledger_lock_wait

        def explain_wait(exc: BaseException) -> str | None:
            if not isinstance(exc, (TenantBusyError, OperationalError)) or "locked" not in str(exc):
                return None
            return (
                f"the run ledger {path} stayed locked by another process (its write lock) past {wait:g}s: "
                "retry when the run writing it has finished"
            )

        def engine(write: bool) -> Engine:
            if not write:
                # Never creates the file, reads while a run writes (WAL), writes nothing, and reads
                # read-only storage too (connect_for_reading).
                return create_engine("sqlite://", poolclass=NullPool, creator=lambda: connect_for_reading(path, wait))
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            created = transactional_engine(path, busy_timeout=wait)

            @event.listens_for(created, "connect")
            def _wal(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute("PRAGMA journal_mode = WAL")
                dbapi_connection.execute("PRAGMA synchronous = NORMAL")

            return created

        # The fleet is the storage as resolved (symbolic links followed): one directory however it is reached.
        fleet, spelled = f"SQLite {os.path.realpath(self.template)}", f"SQLite {os.path.abspath(self.template)}"
        aliases = (spelled,) if spelled != fleet else ()
        return LedgerPlace(None, path, fleet, lambda: os.path.isfile(path), engine, explain_wait, aliases)

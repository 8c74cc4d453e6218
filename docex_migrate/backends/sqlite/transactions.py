"""SQLite: a tenant's transaction. An engine whose BEGIN IMMEDIATE is the tenant's write lock,
waited for in slices so signals are handled, and SQLite's authorizer keeping the transaction
open until docex-migrate ends it."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from ...config import MAX_TIMEOUT_SECONDS
from ...errors import TenantBusyError, UnsupportedStepError
from ..base import ENDING_REFUSED
from .files import lock_holder

# sqlite3's timeout has no "no limit" value, and one past this overflows to 0 (no waiting at all).
FOREVER = float(MAX_TIMEOUT_SECONDS)
WAIT_SLICE = 0.5  # seconds SQLite waits for a tenant's write lock before a signal can be handled
log = logging.getLogger(__name__)


# Told of every statement part SQLite authorizes in a tenant's transaction (action, two
# details, database name, trigger): how the checks see what a revision does outside "main".
# An observer that returns True refuses that part (SQLite's "not authorized").
OBSERVER: ContextVar[Callable[..., bool | None] | None] = ContextVar("docex_migrate_sqlite_observer", default=None)


def ms(seconds: float) -> int:
    # 0 means no limit here, as on PostgreSQL; a positive wait never rounds down to "no wait"
    return math.ceil(min(seconds or FOREVER, FOREVER) * 1000)


def transactional_engine(path: str | ContextVar[str], busy_timeout: float = 5.0, lock_timeout: float | None = None) -> Engine:
    """An engine whose transactions really include DDL, on the file ``path``, or on whichever
    file the ContextVar ``path`` names when a connection is opened (one engine for many files).

    pysqlite commits implicitly before DDL, which would split a migration into pieces. As the
    SQLAlchemy pysqlite docs recommend, turn the driver's transaction handling off and emit
    BEGIN ourselves, so DDL and the alembic_version update share one transaction.

    ``busy_timeout`` bounds the wait for the file's write lock (another writer: another run, or
    the application); once it is ours, ``lock_timeout`` bounds every later wait. The commit
    waits for the application's readers to finish, and while it waits SQLite turns new readers
    away ("database is locked"), so that wait must be short: past it the tenant rolls back and
    the application's readers resume.
    """

    def where() -> str:
        return path.get() if isinstance(path, ContextVar) else path

    # SQLite waits inside one C call, where no signal handler runs: the wait for the write lock
    # is taken in slices, so SIGINT / SIGTERM stop the run within a slice.
    first_wait = min(busy_timeout, WAIT_SLICE)
    engine = create_engine("sqlite://", poolclass=NullPool, creator=lambda: sqlite3.connect(where(), timeout=first_wait))

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # IMMEDIATE takes the file's write lock before anything is read: this is the per-tenant
        # lock, so two runs never read the same revision and apply the same step twice.
        driver: Any = connection.connection.driver_connection  # the sqlite3 connection
        deadline, told = time.monotonic() + busy_timeout, False
        while True:
            try:
                driver.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
            if time.monotonic() >= deadline:
                raise TenantBusyError(
                    f"database is locked: {where()} stayed write-locked by {lock_holder(where())} past "
                    f"--tenant-lock-wait ({busy_timeout:g} s): retry when it is idle, or raise --tenant-lock-wait"
                )
            if not told:
                log.warning("waiting up to %g s for %s: write-locked by %s", busy_timeout, where(), lock_holder(where()))
                told = True
        driver.execute(f"PRAGMA busy_timeout = {ms(busy_timeout if lock_timeout is None else lock_timeout)}")

    return engine


@contextmanager
def kept_open(connection: Connection) -> Iterator[None]:
    """Keep the tenant's transaction open until docex-migrate ends it. SQLite itself refuses a
    statement that would end it (COMMIT, END, ROLLBACK in any spelling, in SQL or through the
    driver's commit() and rollback()): its authorizer is asked as each statement is compiled,
    before anything runs, so nothing of the revision is ever committed early. Savepoints are
    allowed. A statement after the transaction ended anyway (SQLite rolls back by itself on some
    errors, e.g. a full disk) is refused too: it would be committed on its own."""
    driver: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
    refused: list[str] = []

    def authorize(action: int, detail: str | None, *rest: Any) -> int:
        observer = OBSERVER.get()
        if observer is not None and observer(action, detail, *rest):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_TRANSACTION:
            refused.append(detail or "")
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def before_cursor_execute(*_: Any) -> None:
        if not driver.in_transaction:
            raise UnsupportedStepError(ENDING_REFUSED)

    driver.set_authorizer(authorize)
    event.listen(connection, "before_cursor_execute", before_cursor_execute)
    try:
        yield
    except Exception:
        if refused:  # SQLite's own "not authorized", whatever the revision made of it
            raise UnsupportedStepError(ENDING_REFUSED) from None
        raise
    finally:
        driver.set_authorizer(None)  # our COMMIT (or ROLLBACK) follows
        event.remove(connection, "before_cursor_execute", before_cursor_execute)

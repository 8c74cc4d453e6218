"""The run ledger's storage: three small tables beside the tenants, never one of them.

PostgreSQL: the schema ``docex_migrate`` of the same database (a reserved name, so no tenant
maps to it and discovery never lists it). SQLite: the file ``docex_migrate_runs.db`` in the
path template's fixed directory (a name no tenant path may take). Where is the backend's
answer (``Backend.ledger``); what is stored is the same on both:

- ``meta``: ``schema_version`` (a ledger written by a newer docex-migrate is refused, never
  overwritten).
- ``runs``: one row per run: id, command, target, how the tenants were chosen, the run it
  resumes or undoes, the fleet it belongs to, who and where (user, host, pid, the process's
  start time), the docex-migrate version and chain head, start, heartbeat and end, state.
- ``run_tenants``: one row per tenant of a run: the revision before and after, the target,
  the action (``pending`` until its result arrives), when it finished, how long it took, the
  message, and which namespace it was (``identity``: Backend.identity, the one the plan found,
  then the one the tenant's migration locked), so that undo never takes back a tenant dropped
  and created again since; and for a deprovision, its backup (``backup``: the file's absolute
  path and SHA-256, by which ``restore`` knows the backup is this fleet's, this tenant's and
  unchanged); and for a staged rollout, the group it was in (``wave``, from 1; NULL past the
  last wave), by which ``--resume`` keeps the run's waves.
- ``runs.staging`` (a staged rollout's canaries, wave spec and pause, and ``adopt`` for an
  upgrade --adopt, staged or not: as JSON, what --resume keeps) came after schema
  1 too. These columns came after schema 1 without a new schema version: an older
  docex-migrate ignores them, and a ledger without them is read as it is (its runs are undone
  on revisions alone, its backups cannot be restored by docex-migrate, its rollouts are resumed
  in one group) and gets them when next written.

Only commands that change tenants open it for writing (and create it); reading never creates
anything. Writes are short transactions on one connection of their own, never a tenant's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateSchema

from .backends import LedgerPlace
from .errors import DocexMigrateError, UsageError

LEDGER_VERSION = 1

metadata = sa.MetaData()
meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("command", sa.String(20), nullable=False),
    sa.Column("target", sa.Text),  # a revision id, 'base', or NULL (adopt, deprovision)
    sa.Column("selection", sa.Text, nullable=False),  # how the tenants were chosen
    sa.Column("resumes", sa.String(40)),
    sa.Column("undoes", sa.String(40)),
    sa.Column("fleet", sa.Text, nullable=False),  # the database and template the run worked on
    sa.Column("user_name", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("process_start", sa.Text),  # tells a live pid from a reused one (Linux)
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("chain_head", sa.Text),
    sa.Column("started_at", sa.Text, nullable=False),
    sa.Column("heartbeat_at", sa.Text, nullable=False),
    sa.Column("finished_at", sa.Text),
    sa.Column("state", sa.String(16), nullable=False),  # running, finished, interrupted
    sa.Column("error", sa.Text),  # why a run ended early without a signal
    sa.Column("staging", sa.Text),  # --canary/--waves/--pause-between-waves/--adopt: JSON {"canary", "waves", "pause", "adopt"}
)
run_tenants = sa.Table(
    "run_tenants",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(63), primary_key=True),
    sa.Column("namespace", sa.Text, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("from_revision", sa.Text),
    sa.Column("to_revision", sa.Text),
    sa.Column("target", sa.Text),
    sa.Column("finished_at", sa.Text),
    sa.Column("duration_ms", sa.Integer),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("identity", sa.Text),
    sa.Column("backup", sa.Text),  # a deprovision's backup: JSON {"path", "sha256"}, what restore looks it up by
    sa.Column("wave", sa.Integer),  # a staged rollout's group, from 1 (NULL: past the last wave, or not staged)
    sa.Index("run_tenants_by_tenant", "tenant_id"),
)
_BATCH = 500
RESULT_COLUMNS = ("action", "from_revision", "to_revision", "finished_at", "duration_ms", "message", "identity")
_UPDATE_RESULT = (
    run_tenants.update()
    .where(run_tenants.c.run_id == sa.bindparam("b_run_id"), run_tenants.c.tenant_id == sa.bindparam("b_tenant_id"))
    .values(
        {
            **{c: sa.bindparam(f"b_{c}") for c in RESULT_COLUMNS},
            # a result without an identity (a failure) keeps the one its plan found
            "identity": sa.func.coalesce(sa.bindparam("b_identity"), run_tenants.c.identity),
        }
    )
)


def now() -> str:
    """UTC, ISO 8601 to the microsecond: sorts as text."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class LedgerError(UsageError):
    """The ledger cannot be used as it is (written by a newer docex-migrate)."""


class LedgerBusyError(DocexMigrateError):
    """A ledger statement's wait for a lock ran out (Backend.ledger_lock_wait): the message says
    which lock and who holds it. Reading fails (exit 2); a run goes on unrecorded."""


class Ledger:
    """One open connection on the ledger; each write is its own short transaction."""

    def __init__(self, place: LedgerPlace, connection: Connection) -> None:
        self.place = place
        self.connection = connection
        self._tenant_columns = list(run_tenants.c)
        self._run_columns = list(runs.c)

    @classmethod
    def for_writing(cls, place: LedgerPlace, *, create: bool = True) -> Ledger:
        """Open the ledger, creating it on first use (``create``)."""
        connection = _scoped(place, place.engine(True).connect())
        ledger = cls(place, connection)
        try:
            if create:
                ledger._create()
            ledger._check_version()
            ledger._check_columns(add=True)
        except BaseException:
            connection.close()
            raise
        return ledger

    @classmethod
    def for_reading(cls, place: LedgerPlace) -> Ledger | None:
        """The ledger, or None when nothing was ever recorded; never creates anything."""
        if not place.exists():
            return None
        ledger = cls(place, _scoped(place, place.engine(False).connect()))
        try:
            ledger._check_version()
            ledger._check_columns(add=False)
        except BaseException:
            ledger.close()
            raise
        return ledger

    def close(self) -> None:
        engine = self.connection.engine
        self.connection.close()
        engine.dispose()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One short transaction; a lock wait that ran out is LedgerBusyError, naming the lock."""
        try:
            with self.connection.begin():
                yield
        except Exception as exc:
            why = self.place.explain_wait(exc)
            if why is None:
                raise
            raise LedgerBusyError(why) from None

    def _create(self) -> None:
        for attempt in range(3):  # two first runs at once may race to create it: the loser finds it made
            try:
                with self._transaction():
                    if self.place.schema is not None:
                        self.connection.execute(CreateSchema(self.place.schema, if_not_exists=True))
                    metadata.create_all(self.connection, checkfirst=True)
                    found = self.connection.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
                    if found is None:
                        self.connection.execute(meta.insert().values(key="schema_version", value=str(LEDGER_VERSION)))
                return
            except DBAPIError:
                if attempt == 2:
                    raise

    def _check_version(self) -> None:
        with self._transaction():
            found = self.connection.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if found is not None and int(found) > LEDGER_VERSION:
            raise LedgerError(
                f"the run ledger ({self.place.where}) was written by a newer docex-migrate (ledger schema {found}, "
                f"this one knows {LEDGER_VERSION}): upgrade docex-migrate (pip install -U docex-migrate); the ledger is left as it is"
            )

    def _check_columns(self, *, add: bool) -> None:
        """Columns added since schema 1 (run_tenants' identity, backup, wave; runs' staging):
        added when writing, left out of what is read from (or written to) a ledger that lacks them."""
        self._tenant_columns = self._present(run_tenants, add=add)
        self._run_columns = self._present(runs, add=add)

    def _present(self, table: sa.Table, *, add: bool) -> list[sa.Column[Any]]:
        with self._transaction():
            found = {c["name"] for c in sa.inspect(self.connection).get_columns(table.name, schema=self.place.schema)}
        missing = [c for c in table.c if c.name not in found]
        if add and missing:
            prepare = self.connection.dialect.identifier_preparer
            name = prepare.quote(table.name)  # plain SQL: qualified here, not by _scoped's map
            if self.place.schema is not None:
                name = f"{prepare.quote_schema(self.place.schema)}.{name}"
            try:
                with self._transaction():
                    for column in missing:
                        kind = column.type.compile(self.connection.dialect)
                        self.connection.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {prepare.format_column(column)} {kind}")
            except DBAPIError:  # another run added them meanwhile, or we may not: look again
                return self._present(table, add=False)
            missing = []
        return [c for c in table.c if c not in missing]

    # Writing

    def insert_run(self, values: Mapping[str, Any]) -> None:
        present = {c.name for c in self._run_columns}
        with self._transaction():
            self.connection.execute(runs.insert().values(**{k: v for k, v in values.items() if k in present}))

    def update_run(self, run_id: str, values: Mapping[str, Any]) -> None:
        with self._transaction():
            self.connection.execute(runs.update().where(runs.c.run_id == run_id).values(**values))

    def insert_tenants(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            present = {c.name for c in self._tenant_columns}
            with self._transaction():
                self.connection.execute(run_tenants.insert(), [{k: v for k, v in r.items() if k in present} for r in rows])

    def update_results(self, run_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Tenants' results: each row has tenant_id and every one of RESULT_COLUMNS. One
        statement built once: a result costs a round trip, not a compilation."""
        if rows:
            with self._transaction():
                self.connection.execute(
                    _UPDATE_RESULT, [{"b_run_id": run_id, **{f"b_{k}": v for k, v in r.items()}} for r in rows]
                )

    # Reading

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self._transaction():
            row = self.connection.execute(sa.select(*self._run_columns).where(runs.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    def continuing(self, run_id: str) -> list[dict[str, Any]]:
        """The runs recorded as running that resume or undo ``run_id`` (alive or not), oldest first."""
        query = (
            sa.select(*self._run_columns)
            .where(sa.or_(runs.c.resumes == run_id, runs.c.undoes == run_id), runs.c.state == "running")
            .order_by(runs.c.started_at)
        )
        with self._transaction():
            return [dict(r) for r in self.connection.execute(query).mappings()]

    def recent(self, fleets: Sequence[str], limit: int) -> list[dict[str, Any]]:
        query = sa.select(*self._run_columns).where(runs.c.fleet.in_(fleets)).order_by(runs.c.started_at.desc()).limit(limit)
        with self._transaction():
            return [dict(r) for r in self.connection.execute(query).mappings()]

    def counts(self, run_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """run id -> action -> number of tenants."""
        query = (
            sa.select(run_tenants.c.run_id, run_tenants.c.action, sa.func.count())
            .where(run_tenants.c.run_id.in_(run_ids))
            .group_by(run_tenants.c.run_id, run_tenants.c.action)
        )
        found: dict[str, dict[str, int]] = {r: {} for r in run_ids}
        with self._transaction():
            for run_id, action, count in self.connection.execute(query):
                found[run_id][action] = int(count)
        return found

    def tenants(self, run_id: str) -> list[dict[str, Any]]:
        query = sa.select(*self._tenant_columns).where(run_tenants.c.run_id == run_id).order_by(run_tenants.c.tenant_id)
        with self._transaction():
            return [dict(r) for r in self.connection.execute(query).mappings()]

    def backups(self, fleets: Sequence[str]) -> list[dict[str, Any]]:
        """Every backup a deprovision of the fleet recorded, newest first: the tenant's row
        (its ``backup``, its revision then) with the run's id."""
        if "backup" not in {c.name for c in self._tenant_columns}:  # a ledger not yet written by this version
            return []
        query = (
            sa.select(*self._tenant_columns)
            .join(runs, runs.c.run_id == run_tenants.c.run_id)
            .where(runs.c.fleet.in_(fleets), runs.c.command == "deprovision", run_tenants.c.backup.is_not(None))
            .order_by(runs.c.started_at.desc())
        )
        with self._transaction():
            return [dict(r) for r in self.connection.execute(query).mappings()]

    def later_rows(self, fleets: Sequence[str], after: str, tenant_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """For each tenant, its rows in the fleet's runs started after ``after``, oldest first."""
        found: dict[str, list[dict[str, Any]]] = {}
        for batch in _batches(list(tenant_ids)):
            query = (
                sa.select(*self._tenant_columns, runs.c.started_at, runs.c.command)
                .join(runs, runs.c.run_id == run_tenants.c.run_id)
                .where(runs.c.fleet.in_(fleets), runs.c.started_at > after, run_tenants.c.tenant_id.in_(batch))
                .order_by(runs.c.started_at)
            )
            with self._transaction():
                for row in self.connection.execute(query).mappings():
                    found.setdefault(row["tenant_id"], []).append(dict(row))
        return found


def _scoped(place: LedgerPlace, connection: Connection) -> Connection:
    """The tables are named without a schema; on PostgreSQL they live in the ledger's."""
    return connection.execution_options(schema_translate_map={None: place.schema}) if place.schema else connection


def _batches(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]

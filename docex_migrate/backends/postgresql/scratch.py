"""PostgreSQL: scratch schema sets beside the tenants (Backend.scratch_template), held by a
session advisory lock while in use when committed, and swept once their run is gone."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateSchema, DropSchema

from ... import tenants
from ...errors import DatabaseUnavailableError
from .connections import PostgresConnections, first_line, pg_namespace

log = logging.getLogger(__name__)


SCRATCH_PREFIX = "dxcheck_"  # scratch schemas: dxcheck_<8 hex>_<tenant>, one set per scratch_template
# A committed set's marker: the schema dxcheck$<8 hex>, a name no tenant's schema can have ('$' is
# not allowed in schema templates). Only a set with a marker is ever swept, so a tenant whose
# schema merely looks like a scratch schema (template dx{tenant_id}, tenant check_0123abcd_x) is safe.
SCRATCH_MARKER = "dxcheck$"
_SCRATCH_SET = re.compile(SCRATCH_PREFIX + r"[0-9a-f]{8}_")


def _marker(prefix: str) -> str:
    return SCRATCH_MARKER + prefix[len(SCRATCH_PREFIX) : -1]


def _set_key(prefix: str) -> sa.ColumnElement[Any]:
    return sa.func.hashtextextended(prefix, 0)


def _scratch_schemas(connection: Connection, prefix: str) -> list[str]:
    pattern = prefix.replace("_", "\\_") + "%"
    query = sa.select(pg_namespace.c.nspname).where(pg_namespace.c.nspname.like(pattern, escape="\\"))
    return list(connection.execute(query).scalars())


def sweep_scratch(connection: Connection) -> list[str]:
    """Drop the scratch sets (by their markers) that no live session holds; return the names."""
    markers = _scratch_schemas(connection, SCRATCH_MARKER)
    connection.commit()
    dropped: list[str] = []
    for marker in sorted(markers):
        prefix = SCRATCH_PREFIX + marker[len(SCRATCH_MARKER) :] + "_"
        if not _SCRATCH_SET.fullmatch(prefix):
            continue
        held_elsewhere = not connection.execute(sa.select(sa.func.pg_try_advisory_lock(_set_key(prefix)))).scalar()
        connection.commit()
        if held_elsewhere:
            continue  # its run is still going
        members = [*_scratch_schemas(connection, prefix), marker]
        try:
            for name in members:
                connection.execute(DropSchema(name, cascade=True, if_exists=True))
            connection.commit()
            dropped += members
        except DBAPIError as exc:  # e.g. another role's leftovers: not ours to drop
            connection.rollback()
            log.info("cannot remove scratch schemas %s*: %s", prefix, first_line(exc))
        finally:
            connection.execute(sa.select(sa.func.pg_advisory_unlock(_set_key(prefix))))
            connection.commit()
    return dropped


class PostgresScratch(PostgresConnections):
    """Backend.scratch_template."""

    @contextmanager
    def scratch_template(self, *, committed: bool = False) -> Iterator[str]:
        """Schemas ``dxcheck_<random>_<tenant>`` in this database, all dropped at the end. A
        committed set is held by a session advisory lock on its prefix, which the server drops
        when the holder dies however it dies: a lockable set is an abandoned one."""
        prefix = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:8]}_"
        holder = self._hold_scratch(prefix) if committed else None
        try:
            yield prefix + tenants.PLACEHOLDER
        finally:
            try:
                self._drop_scratch(prefix)
            finally:
                if holder is not None:
                    holder.close()  # ends the session: its advisory lock goes with it

    def _hold_scratch(self, prefix: str) -> Connection | None:
        """A session holding the set's advisory lock, after sweeping abandoned sets. None when
        the database cannot be reached: then nothing can be created either."""
        try:
            holder = self.connect()
        except DatabaseUnavailableError:
            return None
        try:
            dropped = sweep_scratch(holder)
            if dropped:
                log.info("removed %d scratch schema(s) left by killed runs", len(dropped))
            holder.execute(sa.select(sa.func.pg_advisory_lock(_set_key(prefix))))
            holder.execute(CreateSchema(_marker(prefix)))
            holder.commit()
        except Exception:
            holder.close()
            raise
        return holder

    def _drop_scratch(self, prefix: str) -> None:
        try:
            connection = self.connect()
        except DatabaseUnavailableError:  # could not connect: nothing was created either
            return
        with connection, connection.begin():
            for name in _scratch_schemas(connection, prefix):
                connection.execute(DropSchema(name, cascade=True))
            connection.execute(DropSchema(_marker(prefix), if_exists=True))  # the set's marker, if committed

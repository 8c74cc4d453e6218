"""Bringing tenants that DocEX created itself (with create_all, no alembic_version) under the chain.

Recognition compares a tenant's catalog snapshot with the snapshot of every revision, computed
from the chain itself by migrating a scratch namespace step by step (never a hand-kept copy).

- An exact match is stamped at the newest revision it equals.
- A known hybrid (DocEX re-applies its schema.sql indexes with IF NOT EXISTS on some versions,
  so index sets drift while tables never change) has the tables of a revision exactly but other
  DocEX index definitions. It is repaired by creating, dropping or redefining DocEX's own
  indexes only (they hold no data, so this is provably safe), checked to equal the revision
  exactly, and stamped, all in one transaction.
- Anything else (different tables or columns, an index DocEX never defined) is refused with a
  readable diff, and nothing is touched.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import revision_snapshots as revision_snapshots_
from .backends import Backend
from .chain import Chain
from .config import Settings
from .revision_snapshots import Snapshots
from .scratch import namespace_snapshot
from .snapshot import differences, snapshot

log = logging.getLogger(__name__)

ADOPT, REPAIR, REFUSE = "adopt", "repair", "refuse"
UNKNOWN = "unknown"  # status only: recognition was not possible (no snapshots, no CREATE)
NO_SNAPSHOTS = (
    "recognition needs CREATE: this chain ships no snapshots for this backend and the role may not "
    "create a scratch schema (run `docex-migrate check --update-manifest`, or grant CREATE)"
)


@dataclass
class Recognition:
    action: str  # adopt, repair or refuse
    revision: str | None = None  # the revision to stamp
    repairs: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)  # (verb, table, index)
    diff: list[str] = field(default_factory=list)

    def describe_repairs(self) -> list[str]:
        out = []
        for verb, table, index in self.repairs:
            cols = ", ".join(f"{c} DESC" if order == "desc" else c for c, order in index["columns"]) if index else ""
            out.append(f"{verb} index {index['name'] if index else ''} on {table}({cols})")
        return out


def _tables_only(snap: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(snap)
    for table in stripped["tables"].values():
        table.pop("indexes")
    return stripped


def _indexes(snap: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (table, name): {"name": name, **definition}
        for table, body in snap["tables"].items()
        for name, definition in body["indexes"].items()
    }


def revision_snapshots(settings: Settings, chain: Chain) -> Snapshots | None:
    """The chain's snapshot at every revision for this backend (see revision_snapshots.py)."""
    return revision_snapshots_.for_chain(settings, chain)


def recognise(tenant: dict[str, Any], snaps: dict[str, dict[str, Any]], order: list[str]) -> Recognition:
    """Which revision an unversioned tenant is, and what (if anything) must be repaired."""
    for revision in reversed(order):
        if snaps[revision] == tenant:
            return Recognition(ADOPT, revision)
    known_names = {name for snap in snaps.values() for (_, name) in _indexes(snap)}
    structure = _tables_only(tenant)
    actual = _indexes(tenant)
    best: Recognition | None = None
    for revision in reversed(order):
        if _tables_only(snaps[revision]) != structure:
            continue
        expected = _indexes(snaps[revision])
        unknown = [f"extra index {name} on {table} (not one DocEX defines)"
                   for (table, name) in actual.keys() - expected.keys() if name not in known_names]
        if unknown:
            return Recognition(REFUSE, revision, diff=sorted(unknown))
        repairs = []
        for key in sorted(actual.keys() - expected.keys()):
            repairs.append(("drop", key[0], actual[key]))
        for key in sorted(expected.keys() & actual.keys()):
            if expected[key] != actual[key]:
                repairs += [("drop", key[0], actual[key]), ("create", key[0], expected[key])]
        for key in sorted(expected.keys() - actual.keys()):
            repairs.append(("create", key[0], expected[key]))
        if best is None or len(repairs) < len(best.repairs):
            best = Recognition(REPAIR, revision, repairs)
    if best is not None:
        return best
    nearest = min(reversed(order), key=lambda r: len(differences(snaps[r], tenant)))
    return Recognition(REFUSE, nearest, diff=differences(snaps[nearest], tenant))


def apply_repairs(connection: Connection, recognition: Recognition) -> None:
    """Create and drop DocEX's own indexes, unqualified: the tenant's search_path decides where."""
    for verb, table, index in recognition.repairs:
        assert index is not None
        columns = [sa.Column(name, sa.Text) for name, _ in index["columns"]]
        shell = sa.Table(table, sa.MetaData(), *columns)
        expressions = [shell.c[name].desc() if order == "desc" else shell.c[name] for name, order in index["columns"]]
        ddl = sa.Index(index["name"], *expressions, unique=index["unique"])
        log.info("adopt: %s index %s on %s", verb, index["name"], table)
        (ddl.drop if verb == "drop" else ddl.create)(connection)


def tenant_snapshot(backend: Backend, tenant_id: str, connection: Connection | None = None) -> dict[str, Any]:
    if connection is not None:
        return snapshot(connection, backend.schema(tenant_id))
    return namespace_snapshot(backend, tenant_id)

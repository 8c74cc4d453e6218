"""A normalised catalog snapshot of one tenant namespace, for comparing schemas exactly.

Tables, columns (type, nullability, server default, comment), primary keys, foreign keys with
ON DELETE, unique and CHECK constraints, indexes (columns, sort order, and whatever else defines
them: see backends/catalog.py), table comments, views, triggers, PostgreSQL enum types,
sequences, functions, procedures and domains (backends/catalog_objects.py).
Column order is left out on purpose: a column added by a revision is appended on PostgreSQL.
Reading one is the backends' business (backends/catalog.py); comparing two is here.

Words kept apart: a "snapshot" is always this, a normalised catalog snapshot (Backend's
outside_snapshot and scratch.namespace_snapshot read one). The chain's snapshot at each revision,
shipped in alembic/snapshots.json, is a "revision snapshot" (revision_snapshots.py). What a fresh
tenant gets (a head file, a head dump or the chain's recording) is a "fresh template" (fresh.py),
never a snapshot. PostgreSQL's own MVCC snapshot appears once, as the "exported transaction
snapshot" a backup is dumped as of (backends/postgresql/deprovision.py).
"""

from __future__ import annotations

from typing import Any

from .backends.catalog import IGNORED_TABLES, Snapshot, snapshot

__all__ = ["IGNORED_TABLES", "Snapshot", "differences", "snapshot"]


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Readable lines naming every place two snapshots differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines = []
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                lines.append(f"missing {where}: {expected[key]!r}")
            elif key not in expected:
                lines.append(f"extra {where}: {actual[key]!r}")
            else:
                lines.extend(differences(expected[key], actual[key], where))
        return lines
    return [] if expected == actual else [f"{path}: expected {expected!r}, found {actual!r}"]

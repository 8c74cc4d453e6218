"""The chain's catalog snapshot at every revision, per backend kind: what `adopt` and `status`
compare an unversioned tenant with.

Two sources, in this order:

1. The snapshots the package ships (``alembic/snapshots.json``, written by ``docex-migrate
   check --update-manifest``), so that reading commands recognise tenants with a role that may
   only connect and read, and create nothing. Each entry is keyed on the revision's chained
   checksum (the one in revisions.sum), so an edited or reordered revision never matches a stale
   snapshot, and revisions added on top of the released ones leave the released entries valid.
   The ``shipped-snapshots`` check proves them equal to what the chain produces on the
   configured backend.
2. Otherwise, computed by migrating a scratch namespace through the chain in a transaction that
   is rolled back (needs CREATE on PostgreSQL). Without either, recognition is unavailable
   (None) and callers say so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from . import manifest
from .backends import open_backend
from .chain import Chain, script_location
from .config import Settings
from .runner import along_chain
from .scratch import scratch_settings
from .snapshot import snapshot

log = logging.getLogger(__name__)

SNAPSHOTS_NAME = "snapshots.json"
Snapshots = dict[str, dict[str, Any]]  # revision -> its revision snapshot (a catalog snapshot: snapshot.py)


def kind_of(settings: Settings) -> str:
    with open_backend(settings) as backend:
        return backend.kind


def checksums(chain: Chain) -> dict[str, str]:
    """revision -> its chained checksum (revisions.sum's)."""
    files = [Path(chain.script.get_revision(r).path) for r in chain.order]
    return {r: entry.checksum for r, entry in zip(chain.order, manifest.chained(files), strict=True)}


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def shipped(kind: str, chain: Chain, *, partial: bool = False) -> Snapshots | None:
    """The shipped snapshot of every revision of the chain for ``kind``; None unless all are
    there (``partial``: whichever are)."""
    entries = _read_file(script_location() / SNAPSHOTS_NAME).get(kind, {})
    found = {r: entries[c]["snapshot"] for r, c in checksums(chain).items() if c in entries}
    if partial or len(found) == len(chain.order):
        return found
    return None


def compute(settings: Settings, chain: Chain, order: list[str] | None = None) -> Snapshots:
    """Migrate a scratch namespace through the chain (or its first revisions, ``order``),
    snapshotting each revision; all of it rolled back."""
    with scratch_settings(settings) as scratch, open_backend(scratch) as backend:
        schema = backend.schema("fingerprint")
        return along_chain(backend, "fingerprint", chain, order or chain.order, lambda c: snapshot(c, schema))


def for_chain(settings: Settings, chain: Chain) -> Snapshots | None:
    """The snapshots to recognise tenants with, once per process and backend kind; None when
    none are shipped for this chain and this role may not compute them."""
    kind = kind_of(settings)

    def build() -> Snapshots | None:
        found = shipped(kind, chain)
        if found is None:
            try:
                found = compute(settings, chain)
            except Exception as exc:  # e.g. no CREATE privilege: recognition is then unavailable
                log.info("cannot compute the chain's snapshots: %s", exc)
        return found

    return chain.cached(f"revision-snapshots:{kind}", build)


def write(settings: Settings, chain: Chain) -> Path:
    """Record the chain's snapshots for SQLite (always) and for the configured PostgreSQL, keeping
    the other kind's entries that still belong to this chain."""
    path = script_location() / SNAPSHOTS_NAME
    sums = checksums(chain)
    data = {kind: {c: e for c, e in entries.items() if c in sums.values()} for kind, entries in _read_file(path).items()}
    kinds = {kind_of(s): s for s in (Settings(), settings)}  # the built-in SQLite, and the configured backend
    for kind, kind_settings in kinds.items():
        try:
            computed = compute(kind_settings, chain)
        except Exception as exc:  # a chain that does not run here: the checks say why
            log.warning("no %s snapshots recorded: the chain fails there (%s)", kind, exc)
            continue
        data[kind] = {sums[r]: {"revision": r, "snapshot": computed[r]} for r in chain.order}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path

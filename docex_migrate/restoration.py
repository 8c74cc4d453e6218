"""restore: a deprovisioned tenant brought back from its deprovision's backup.

A backup is restored only as what the run ledger says it is. Deprovision records each backup's
absolute path and SHA-256 in its run (restore_advice.backup_record); restore hashes the file it
is given and looks that hash up among this fleet's deprovisions. So a backup is refused, with
nothing changed (exit 2), when it is missing or unreadable; when it differs from every backup
recorded (truncated, edited: a recorded path with another hash says so); when it is another
tenant's (acme-corp's backup is never restored as globex-corp, whatever its file is called:
the look-alike a renamed file would be); when the revision it was at is one this chain does not
know; and when the tenant exists. The backend then loads it atomically and checks it again
(backends' restore). Read-only until then.

An older backup of the tenant is restored as any other (an operator may want that older state
back), but the record names the tenant's backups that later deprovisions wrote (``newer``), which
restore reports: the tenant was provisioned and deprovisioned again since.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .backends import Backend
from .backends.base import copy_hashing
from .chain import Chain
from .config import Settings
from .errors import Interrupted, RestoreRefusedError
from .invocation import Invocation
from .ledger import Ledger
from .restore_advice import read_backup_record, restore_command, sha256_of
from .results import Action, TenantResult
from .tempdirs import locked_directory


@dataclass(frozen=True)
class RecordedBackup:
    """A backup as the deprovision that wrote it recorded it."""

    run_id: str
    tenant_id: str
    namespace: str
    revision: str | None  # the tenant's revision when it was deprovisioned
    path: Path
    sha256: str
    # the tenant's backups that deprovisions recorded after this one (newest first): (path, run)
    newer: tuple[tuple[Path, str], ...] = ()


def _refused(why: str) -> RestoreRefusedError:
    return RestoreRefusedError(f"{why}; nothing restored")


def recorded_backup(settings: Settings, backend: Backend, tenant_id: str, backup: Path) -> RecordedBackup:
    """The ledger's record of ``backup`` (found by its contents' SHA-256), proven to be
    ``tenant_id``'s; RestoreRefusedError otherwise."""
    try:
        if not backup.is_file():
            raise _refused(f"backup {backup} {'is not a file' if backup.exists() else 'does not exist'}")
        sha256 = sha256_of(backup)
    except OSError as exc:
        raise _refused(f"cannot read backup {backup} ({exc.strerror or exc})") from None
    place = backend.ledger()
    ledger = Ledger.for_reading(place)
    if ledger is None:
        raise _refused(
            f"backup {backup} is not recorded by any deprovision of this database: no run has been recorded ({place.where})"
        )
    try:
        rows = ledger.backups(place.fleets)
    finally:
        ledger.close()
    same_path, others = None, []
    newer: list[tuple[Path, str]] = []
    for row in rows:  # newest first
        found = read_backup_record(row.get("backup"))
        if found is None:
            continue
        path, recorded_sha = found
        if recorded_sha == sha256:
            record = RecordedBackup(row["run_id"], row["tenant_id"], row["namespace"], row["from_revision"], path, sha256)
            if record.tenant_id == tenant_id:
                return replace(record, newer=tuple(newer))
            # Another tenant's. (Two tenants' SQLite backups can be byte-identical: two fresh
            # tenants copied from one head file. Then this tenant's own record is looked for.)
            others.append(record)
        elif same_path is None and path in (backup.absolute(), backup.resolve()):
            same_path = row["run_id"]
        if row["tenant_id"] == tenant_id and recorded_sha != sha256:
            newer.append((path, str(row["run_id"])))
    if others:
        other = others[0]
        raise _refused(
            f"backup {backup} was taken from tenant {other.tenant_id!r} (deprovision run {other.run_id}), not "
            f"{tenant_id!r}: a backup is only restored as the tenant it was taken from "
            f"(`{restore_command(settings, other.tenant_id, backup)}`)"
        )
    if same_path is not None:
        raise _refused(
            f"backup {backup} changed since deprovision run {same_path} wrote it (its SHA-256 differs from the one "
            "recorded): it is truncated or edited"
        )
    raise _refused(
        f"backup {backup} matches no backup recorded by a deprovision of this database and template ({place.database}): "
        "it is another fleet's, an older docex-migrate's, or it was changed"
    )


def restore(inv: Invocation, tenant_id: str, backup: Path) -> tuple[TenantResult, RecordedBackup]:
    """Bring ``tenant_id`` back from ``backup``, refused (RestoreRefusedError, exit 2, nothing
    changed) unless the ledger proves the backup is this tenant's, unchanged, at a revision
    this chain knows, and the tenant does not exist."""
    backend, chain = inv.backend, inv.chain
    namespace = backend.namespace(tenant_id)  # an invalid id is refused first
    backup = backup.absolute()
    record = recorded_backup(inv.settings, backend, tenant_id, backup)
    if record.namespace != namespace:
        raise _refused(f"backup {backup} holds {record.namespace}, but tenant {tenant_id!r} is {namespace} now")
    _known(chain, record, backup)
    if backend.read_states([tenant_id])[tenant_id].exists:
        raise _refused(
            f"tenant {tenant_id!r} exists ({namespace}): restore never overwrites a tenant; deprovision it first if it must be replaced"
        )
    identity = _restore_from_private_copy(backend, tenant_id, backup, record)
    result = TenantResult(
        tenant_id,
        namespace,
        Action.RESTORED,
        None,
        record.revision,
        f"restored from {backup} (deprovision run {record.run_id})",
        identity=identity,
    )
    return result, record


def not_restored(tenant_id: str, namespace: str, stop: Interrupted) -> TenantResult:
    """The tenant of a restore a signal stopped before it committed: rolled back, not there."""
    why = f"interrupted by {stop.signal_name} before it committed: rolled back, nothing restored"
    return TenantResult(tenant_id, namespace, Action.NOT_RUN, None, None, why)


def _restore_from_private_copy(backend: Backend, tenant_id: str, backup: Path, record: RecordedBackup) -> str | None:
    """Load a copy of ``backup`` that only this process can change, proven by its SHA-256 before
    any of it runs: the backup file itself may be appended to or rewritten while it loads, and
    a statement that ran cannot be taken back (a COMMIT in it would end the tenant's
    transaction). Needs temporary space the size of the backup."""
    with locked_directory("docex_migrate_restore_", sweep=True) as private:
        copy = private / backup.name
        with backup.open("rb") as source, open(os.open(copy, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "wb") as target:
            digest = copy_hashing(source, target)  # 0600 from its creation: a tenant's whole data, as the backup itself
        if digest != record.sha256:
            raise _refused(f"backup {backup} changed since deprovision wrote it (its SHA-256 differs)")
        try:
            return backend.restore(tenant_id, copy, record.revision, record.sha256)
        except RestoreRefusedError as exc:  # name the backup the user gave, not the private copy
            raise RestoreRefusedError(str(exc).replace(str(copy), str(backup))) from None


def _known(chain: Chain, record: RecordedBackup, backup: Path) -> None:
    if record.revision is not None and not chain.knows(record.revision):
        raise _refused(
            f"backup {backup} is at revision {record.revision}, which this chain does not know: restore it with the "
            "docex-migrate that deprovisioned it"
        )

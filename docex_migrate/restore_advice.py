"""A deprovision's backup as the run ledger records it, and the command that restores it: what
deprovision, undo and restore itself print, so that the advice is the same everywhere. Pure."""

from __future__ import annotations

import json
from pathlib import Path

from .advice import command
from .backends.base import sha256_of
from .config import Settings

__all__ = ["backup_path", "backup_record", "read_backup_record", "restore_command", "sha256_of"]


def backup_record(path: Path) -> str:
    """What the ledger keeps of a backup: its absolute path and SHA-256, as JSON."""
    return json.dumps({"path": str(path), "sha256": sha256_of(path)}, sort_keys=True)


def read_backup_record(recorded: str | None) -> tuple[Path, str] | None:
    """A ledger's backup record: the path and the SHA-256; None for none (or one unreadable)."""
    if not recorded:
        return None
    try:
        found = json.loads(recorded)
        return Path(found["path"]), str(found["sha256"])
    except (ValueError, KeyError, TypeError):
        return None


def backup_path(recorded: str | None) -> Path | None:
    found = read_backup_record(recorded)
    return None if found is None else found[0]


def restore_command(settings: Settings, tenant_id: str, backup: Path) -> str:
    """`docex-migrate [--config FILE] restore TENANT --from BACKUP`, runnable as printed from
    any directory where the same configuration applies: both paths absolute, quoted for a shell."""
    return command(settings, "restore", tenant_id, "--from", str(backup.absolute()))

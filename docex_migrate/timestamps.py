"""File-name timestamps for backups."""

from datetime import datetime, timezone


def timestamp() -> str:
    """UTC, sortable, safe in a file name: 20261128T091500123456Z."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")

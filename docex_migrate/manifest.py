"""The revision manifest: a chained checksum of every released revision file, like Atlas's
atlas.sum. Editing or reordering a released revision changes every checksum after it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "revisions.sum"
HEADER = (
    "# docex-migrate revision manifest: released revisions and their chained checksums.\n"
    "# Do not edit: `docex-migrate check --update-manifest` writes it.\n"
)


@dataclass(frozen=True)
class Entry:
    filename: str
    checksum: str


def chained(files: list[Path]) -> list[Entry]:
    """Each entry's checksum covers its file and every file before it."""
    entries, previous = [], b""
    for path in files:
        digest = hashlib.sha256(previous + hashlib.sha256(path.read_bytes()).digest()).hexdigest()
        entries.append(Entry(path.name, f"h1:{digest}"))
        previous = digest.encode()
    return entries


def read(path: Path) -> list[Entry] | None:
    if not path.is_file():
        return None
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            filename, checksum = line.split()
            entries.append(Entry(filename, checksum))
    return entries


def write(path: Path, entries: list[Entry]) -> None:
    path.write_text(HEADER + "".join(f"{e.filename} {e.checksum}\n" for e in entries), encoding="utf-8")


def compare(released: list[Entry], current: list[Entry]) -> tuple[list[str], list[str]]:
    """(problems, new files): released revisions must be unchanged, in order, at the bottom."""
    for i, entry in enumerate(released):  # the first divergence; every checksum after it differs too
        if i >= len(current):
            return [f"released revision {entry.filename} is missing from the chain"], []
        if current[i].filename != entry.filename:
            return [
                f"position {i + 1} of the chain is {current[i].filename}, the manifest has {entry.filename}: "
                "released revisions were reordered, or a revision was inserted below them"
            ], []
        if current[i].checksum != entry.checksum:
            return [f"released revision {entry.filename} was edited after release (its checksum differs)"], []
    return [], [e.filename for e in current[len(released) :]]

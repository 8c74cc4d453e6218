"""The revision chain: where it lives, and resolving revision names against it."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from configparser import ConfigParser
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO, TypeVar

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from .checkout import find_checkout, working_directory
from .errors import RevisionError, UsageError

BASE = "base"
VERSION_TABLE = "alembic_version"  # Alembic's default name; every tenant namespace holds its own
T = TypeVar("T")

SCRIPT_LOCATION_ENV = "DOCEX_MIGRATE_SCRIPT_LOCATION"


def script_location() -> Path:
    """The alembic/ folder in use: $DOCEX_MIGRATE_SCRIPT_LOCATION when set; else that of the
    source checkout around the working directory (checkout.py); else the one shipped inside the
    wheel (or beside the package, run from a source tree).

    $DOCEX_MIGRATE_SCRIPT_LOCATION names another revision folder (one whose env.py runs
    docex_migrate.environment); the fault tests use it for small chains of their own.
    """
    override = os.environ.get(SCRIPT_LOCATION_ENV)
    return _script_location(override, None if override is not None else find_checkout(working_directory()))


@functools.lru_cache(maxsize=16)  # asked twice per tenant migrated; the answer only depends on these
def _script_location(override: str | None, checkout: Path | None) -> Path:
    if override is not None:  # set but empty too: never silently the default chain
        if not (Path(override) / "env.py").is_file():
            raise RevisionError(f"${SCRIPT_LOCATION_ENV}={override!r} is not a revision folder (no env.py)")
        return Path(override)
    if checkout is not None:
        return checkout / "alembic"
    packaged = Path(__file__).resolve().parent / "alembic"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "alembic"


def writable_location() -> Path:
    """script_location(), refused when it is the installed package's: revisions, the manifest
    and the shipped snapshots are written in a source checkout, never into site-packages."""
    location = script_location()
    if "site-packages" in location.parts or "dist-packages" in location.parts:
        raise UsageError(
            f"no docex-migrate clone around {working_directory() or 'the working directory'}, and the installed "
            f"package's revisions ({location}) are never written: run this inside your clone (the folder with "
            f"alembic.ini, alembic/versions/ and docex_migrate/schema.py), or set ${SCRIPT_LOCATION_ENV} to its alembic/ folder"
        )
    return location


class _ChainConfig(Config):
    """Alembic's Config, its script_location our chain's. Its options are parsed only when
    something reads them: a tenant's migration through runner._drive reads none, and parsing
    them cost ~0.1 ms a tenant."""

    def __init__(self, output_buffer: TextIO | None) -> None:
        super().__init__(output_buffer=output_buffer)
        self._script_location = str(script_location())  # now, as set_main_option would have read it

    @cached_property
    def file_config(self) -> ConfigParser:  # replaces Alembic's memoized property of the same name
        parser = super().file_config
        parser.set(self.config_ini_section, "script_location", self._script_location)
        return parser


def alembic_config(output_buffer: TextIO | None = None, **attributes: object) -> Config:
    """An Alembic Config for our chain; live objects reach env.py through ``attributes``."""
    config = _ChainConfig(output_buffer)
    config.attributes.update(attributes)
    return config


@dataclass(eq=False)
class Chain:
    """The linear chain of tenant-schema revisions, parsed once per process (see load_chain)."""

    config: Config

    @cached_property
    def script(self) -> ScriptDirectory:
        """The one ScriptDirectory of this chain: every Alembic call of the process uses it, so
        the revision files are parsed once, not once per tenant."""
        return ScriptDirectory.from_config(self.config)

    def cached(self, what: str, build: Callable[[], T]) -> T:
        """What is derived from the chain (revision snapshots, fresh-tenant templates), built
        once per process and keyed on the chain's content: one cache for all of them."""
        key = (self.fingerprint, what)
        if key not in _DERIVED:
            _DERIVED[key] = build()
        return _DERIVED[key]  # type: ignore[no-any-return]

    def has_cached(self, what: str) -> bool:
        return (self.fingerprint, what) in _DERIVED

    @cached_property
    def order(self) -> list[str]:
        """Revision ids from the first to the head."""
        heads = self.script.get_heads()
        if len(heads) != 1:
            raise RevisionError(f"the revision chain has {len(heads)} heads ({', '.join(heads)}): merge them into one")
        return [rev.revision for rev in reversed(list(self.script.walk_revisions()))]

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever any revision file does: the key for what is derived from the chain."""
        digest = hashlib.sha256(str(script_location()).encode())
        for revision in self.order:
            digest.update(Path(self.script.get_revision(revision).path).read_bytes())
        return digest.hexdigest()

    @property
    def head(self) -> str:
        return self.order[-1]

    def resolve(self, name: str) -> str | None:
        """A full revision id for 'head', 'base' (None), an id or a unique prefix of one."""
        if name == BASE:
            return None
        if name in ("head", "heads"):
            return self.head
        if name.startswith(("+", "-")) or any(c in name for c in "@:"):
            raise RevisionError(
                f"relative revision {name!r} is ambiguous across a fleet: name a revision (see `docex-migrate history`)"
            )
        try:
            revision = self.script.get_revision(name)
        except CommandError as exc:
            raise RevisionError(f"unknown revision {name!r}: {exc}; see `docex-migrate history`") from None
        if revision is None:
            raise RevisionError(f"unknown revision {name!r}: see `docex-migrate history`")
        return revision.revision

    def position(self, revision: str | None) -> int:
        """Index in the chain (-1 for base); ValueError for a revision the chain does not know."""
        return -1 if revision is None else self.order.index(revision)

    def knows(self, revision: str) -> bool:
        return revision in self.order


_DERIVED: dict[tuple[str, str], Any] = {}
_CHAINS: dict[tuple[str, tuple[tuple[str, int, int, int], ...]], Chain] = {}


def _files_key(location: Path) -> tuple[tuple[str, int, int, int], ...]:
    """The revision files as they are on disk: name, inode, size and modification time to the
    nanosecond. Any write changes it; reading the files instead cost ~0.2 ms a call, which
    migrating a tenant pays."""
    found = []
    with os.scandir(location / "versions") as entries:
        for entry in entries:
            if entry.name.endswith(".py") and entry.is_file():
                stat = entry.stat()
                found.append((entry.name, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


def load_chain() -> Chain:
    """The chain at script_location(), parsed once per process for as long as its revision
    files stay the same (checking costs microseconds; parsing them, milliseconds)."""
    location = script_location()
    key = (str(location), _files_key(location))
    if key not in _CHAINS:
        _CHAINS[key] = Chain(alembic_config())
    return _CHAINS[key]

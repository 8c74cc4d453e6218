"""The source checkout a maintainer works in, found from the working directory.

A clone of docex-migrate holds, at its top, ``alembic.ini``, the revision folder ``alembic/``
(``env.py`` and ``versions/``) and the tenant metadata ``docex_migrate/schema.py``. Run from
anywhere inside one, docex-migrate uses that clone's revisions and its schema.py, whatever copy
of the package is installed (``make install`` is not editable): a new revision is written where
the maintainer commits it, and autogenerate compares against the schema.py being edited.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import sqlalchemy as sa

from .errors import UsageError

SCHEMA_FILE = Path("docex_migrate") / "schema.py"
MARKERS = (Path("alembic.ini"), Path("alembic") / "env.py", SCHEMA_FILE)


def is_checkout(folder: Path) -> bool:
    return all((folder / marker).is_file() for marker in MARKERS) and (folder / "alembic" / "versions").is_dir()


def working_directory() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the working directory was removed: no checkout around it
        return None


@functools.lru_cache(maxsize=16)  # asked per tenant migrated (through script_location); depends only on this
def find_checkout(start: str | None) -> Path | None:
    """The nearest folder at or above ``start`` that is a docex-migrate checkout, or None."""
    if start is None:
        return None
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if is_checkout(folder):
            return folder
    return None


def tenant_metadata(script_location: Path, packaged: sa.MetaData) -> sa.MetaData:
    """The tenant metadata that belongs with the revisions at ``script_location``: the
    schema.py of the checkout holding them, or ``packaged`` (the imported package's) when they
    are not in a checkout or that schema.py is the imported module itself."""
    source = script_location.parent / SCHEMA_FILE
    if not source.is_file() or not is_checkout(script_location.parent):
        return packaged
    from . import schema

    if source.resolve() == Path(schema.__file__).resolve():
        return packaged
    stat = source.stat()
    return _load_metadata(str(source.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)  # keyed on the file's state: an edit is read again
def _load_metadata(path: str, mtime_ns: int, size: int) -> sa.MetaData:
    spec = importlib.util.spec_from_file_location(f"docex_migrate_checkout_schema_{mtime_ns}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise UsageError(f"cannot read the tenant metadata {path}: {type(exc).__name__}: {first}") from exc
    metadata = getattr(module, "metadata", None)
    if not isinstance(metadata, sa.MetaData):
        raise UsageError(f"{path} defines no `metadata = sa.MetaData()`: autogenerate compares against it")
    return metadata

"""Which revisions and which schema.py docex-migrate uses: the clone around the working
directory, else the installed package's; $DOCEX_MIGRATE_SCRIPT_LOCATION above both."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from docex_migrate import schema
from docex_migrate.chain import SCRIPT_LOCATION_ENV, script_location
from docex_migrate.checkout import find_checkout, tenant_metadata, working_directory

ROOT = Path(__file__).resolve().parents[1]


def make_clone(folder: Path, extra_table: str | None = None) -> Path:
    (folder / "alembic" / "versions").mkdir(parents=True)
    (folder / "alembic" / "env.py").write_text("from docex_migrate.environment import run\n\nrun()\n")
    (folder / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    (folder / "docex_migrate").mkdir()
    text = (ROOT / "docex_migrate" / "schema.py").read_text()
    if extra_table:
        text = text.replace("\nTABLE_NAMES = ", f'\nsa.Table("{extra_table}", metadata, sa.Column("x", sa.Text))\nTABLE_NAMES = ')
    (folder / "docex_migrate" / "schema.py").write_text(text)
    return folder


def test_the_clone_around_the_working_directory(tmp_path, monkeypatch):
    clone = make_clone(tmp_path / "clone", extra_table="only_in_the_clone")
    (clone / "build" / "demo").mkdir(parents=True)
    monkeypatch.delenv(SCRIPT_LOCATION_ENV, raising=False)
    monkeypatch.chdir(clone / "build" / "demo")
    assert find_checkout(working_directory()) == clone.resolve()
    assert script_location() == clone.resolve() / "alembic"
    metadata = tenant_metadata(script_location(), schema.metadata)
    assert "only_in_the_clone" in metadata.tables and "only_in_the_clone" not in schema.metadata.tables
    monkeypatch.chdir(tmp_path)
    assert find_checkout(working_directory()) is None
    assert script_location() != clone.resolve() / "alembic"


def test_a_partial_clone_is_not_one_and_the_variable_wins(tmp_path, monkeypatch):
    clone = make_clone(tmp_path / "clone")
    (clone / "docex_migrate" / "schema.py").unlink()
    monkeypatch.chdir(clone)
    assert find_checkout(working_directory()) is None
    other = shutil.copytree(ROOT / "alembic", tmp_path / "other", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv(SCRIPT_LOCATION_ENV, str(other))
    assert script_location() == other
    assert tenant_metadata(other, schema.metadata) is schema.metadata  # no schema.py beside it


def test_a_removed_working_directory_is_no_clone(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    os.rmdir(gone)
    assert working_directory() is None
    monkeypatch.delenv(SCRIPT_LOCATION_ENV, raising=False)
    assert (script_location() / "env.py").is_file()


def test_the_imported_schema_is_not_loaded_twice(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert tenant_metadata(ROOT / "alembic", schema.metadata) is schema.metadata

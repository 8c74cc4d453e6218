"""The documentation's commands run as written.

Every `docex-migrate ...` line of a ```sh block in README.md and docs/*.md is run, in the order
the page shows it, through bash as a user would type it, with the installed executable, against
a scratch fleet of its own (SQLite files in a temporary directory; the README's PostgreSQL lines
in a database of their own). Each must exit 0. Placeholders are filled as a reader would fill
them: RUN (and a run id shown as an example) with the newest run of the fleet, BACKUP with the
backup deprovision wrote, a DOCEX_DATABASE_URL with the test server's database; and a
`--pause-between-waves` is shortened to 0 s (the pause itself is tested in test_rollout.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent  # the venv's bin: its docex-migrate is the installed one
RUN_ID = re.compile(r"\b\d{8}T\d{6}-[0-9a-f]{6}\b")
ASSIGNMENT = re.compile(r"[A-Z_]+=\S*")

pytestmark = pytest.mark.slow


def sh_blocks(page: Path) -> list[str]:
    """The ```sh blocks of ``page``, each as its text."""
    return re.findall(r"^```sh\n(.*?)^```$", page.read_text(), flags=re.M | re.S)


def documented_commands(page: Path) -> list[str]:
    """The page's `docex-migrate` command lines, in order; continued lines joined."""
    commands = []
    for block in sh_blocks(page):
        for line in block.replace("\\\n", " ").splitlines():
            words = line.split()
            while words and ASSIGNMENT.fullmatch(words[0]):
                words = words[1:]
            if words and words[0] == "docex-migrate":
                commands.append(line.strip())
    return commands


def test_every_page_with_commands_is_read():
    """The parser finds the commands the pages show (so the test below cannot pass on nothing)."""
    found = {page.name: documented_commands(page) for page in PAGES}
    assert any("provision acme-corp globex-corp" in c for c in found["README.md"])
    assert any(c.startswith("docex-migrate verify") for c in found["operators.md"])
    assert any(c.startswith("docex-migrate check") for c in found["authors.md"])


class Fleet:
    """A scratch working directory (HOME too) where documented commands run."""

    def __init__(self, workdir: Path, database_url: str | None):
        self.workdir = workdir
        self.database_url = database_url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCEX_")}
        self.env.update(HOME=str(workdir), PATH=f"{BIN}{os.pathsep}{self.env.get('PATH', '')}")

    def _env_for(self, line: str) -> dict[str, str]:
        env = dict(self.env)
        if "pg.yaml" in line:  # the README's PostgreSQL file, on the test server
            assert self.database_url, "a PostgreSQL line needs the test server"
            env["DOCEX_DATABASE_URL"] = self.database_url
        return env

    def newest_run(self, line: str) -> str:
        out = subprocess.run(
            ["docex-migrate", "runs", "--json"], cwd=self.workdir, env=self._env_for(line), capture_output=True, text=True
        )
        runs = json.loads(out.stdout or "[]")
        assert runs, f"{line!r} needs a run and the fleet has none"
        return max(runs, key=lambda r: r["started_at"])["run_id"]

    def newest_backup(self) -> str:
        backups = sorted((self.workdir / "backups").iterdir(), key=lambda p: p.stat().st_mtime)
        assert backups, "BACKUP needs a deprovision before it"
        return str(backups[-1])

    def fill(self, line: str) -> str:
        if re.search(r"\bRUN\b", line) or RUN_ID.search(line):
            run = self.newest_run(line)
            line = RUN_ID.sub(run, re.sub(r"\bRUN\b", run, line))
        if re.search(r"\bBACKUP\b", line):
            line = re.sub(r"\bBACKUP\b", self.newest_backup(), line)
        line = re.sub(r"--pause-between-waves \d+", "--pause-between-waves 0", line)
        if "DOCEX_DATABASE_URL=" in line:
            assert self.database_url, "a PostgreSQL line needs the test server"
            line = re.sub(r"DOCEX_DATABASE_URL=\S+", f"DOCEX_DATABASE_URL={self.database_url}", line)
        return line

    def run(self, line: str) -> subprocess.CompletedProcess:
        filled = self.fill(line)
        return subprocess.run(
            ["bash", "-c", filled], cwd=self.workdir, env=self._env_for(line), capture_output=True, text=True, timeout=300
        )


@pytest.fixture
def scratch_database(request):
    """A PostgreSQL database of its own (the README's config uses tenant_{tenant_id}), dropped after."""
    server = request.getfixturevalue("pg_url")
    name = f"docex_migrate_test_docs_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run_page(page: Path, fleet: Fleet, seed: list[str]) -> None:
    for line in seed:
        done = fleet.run(line)
        assert done.returncode == 0, f"seeding {line!r}: {done.stderr}"
    commands = documented_commands(page)
    assert commands
    for line in commands:
        done = fleet.run(line)
        assert done.returncode == 0, f"{page.name}: {line!r} exited {done.returncode}:\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr, f"{page.name}: {line!r}:\n{done.stderr}"


@pytest.mark.postgres
def test_the_readme_commands_run(tmp_path, scratch_database):
    """The README from top to bottom: SQLite quick start, the PostgreSQL config as shown, the
    rollout recipe, deprovision and restore."""
    (pg_yaml,) = [b for b in re.findall(r"^```yaml\n(.*?)^```$", (ROOT / "README.md").read_text(), flags=re.M | re.S)]
    (tmp_path / "pg.yaml").write_text(pg_yaml)
    run_page(ROOT / "README.md", Fleet(tmp_path, scratch_database), seed=[])


SQLITE_PAGES = [p.name for p in PAGES[1:] if p.name != "authors.md" and documented_commands(p)]


@pytest.mark.parametrize("page", SQLITE_PAGES)
def test_the_operator_and_reference_commands_run(tmp_path, page):
    """The docs' commands on a SQLite fleet that has the tenants they name."""
    fleet = Fleet(tmp_path, None)
    seed = ["docex-migrate provision acme-corp globex-corp canary-1 canary-2 " + " ".join(f"t-{i:02}" for i in range(10))]
    run_page(ROOT / "docs" / page, fleet, seed)


@pytest.mark.postgres
def test_the_authors_commands_run(tmp_path, scratch_database):
    """The CI checks as the authors' page shows them, on SQLite and on PostgreSQL."""
    run_page(ROOT / "docs" / "authors.md", Fleet(tmp_path, scratch_database), seed=[])
    assert json.loads((tmp_path / "report.json").read_text())["passed"] is True

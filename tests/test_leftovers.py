"""Leftovers: a failed copy leaves no staging file, and what a killed run leaves (scratch schemas,
temporary directories) is removed by the next run, but never while a live process holds it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import cli

from docex_migrate.backends.postgresql import SCRATCH_PREFIX as SCHEMA_PREFIX
from docex_migrate.tempdirs import MIN_AGE

ROOT = Path(__file__).resolve().parents[1]


def child(code: str, *, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    """A Python process of ours, importing the package from this checkout."""
    environ = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=environ, text=True, **kw)


def test_a_full_disk_during_provision_leaves_no_staging_file(sqlite_env):
    """The head file is copied beside the tenant's file and linked into place; with the disk
    full (a file-size limit, EFBIG like ENOSPC) the copy fails and its staging file stayed."""
    code = (
        "import resource, signal\n"
        "from docex_migrate import api, fresh, load_settings\n"
        "from docex_migrate.chain import load_chain\n"
        "settings = load_settings()\n"
        "fresh.template(settings, load_chain())  # built before the disk fills\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.RLIM_INFINITY))\n"
        "(result,) = api.provision(settings, ['acme'])\n"
        "print(result.action, result.message)\n"
    )
    done = child(code, cwd=sqlite_env.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert out.startswith("failed") and "File too large" in out
    folder = sqlite_env.workdir / "storage" / "tenant_acme"
    assert not folder.exists() or not any(folder.iterdir())
    assert not list(sqlite_env.workdir.rglob(".docex.db.*"))  # the staged copy of the head file
    result = cli("provision", "acme", "--exist-ok")  # the disk has room again
    assert result.exit_code == 0, result.output


@pytest.mark.postgres
def test_scratch_schemas_of_a_killed_check_are_removed_by_the_next_check_but_not_a_live_ones(pg_env):
    def scratch_schemas() -> set[str]:
        with pg_env.engine().connect() as conn:
            pattern = SCHEMA_PREFIX.replace("_", "\\_") + "%"
            return set(conn.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": pattern}).scalars())

    before = scratch_schemas()  # other tests' live checks may share this database
    environ = {"DOCEX_CONFIG": str(pg_env.config_file), "HOME": str(pg_env.workdir / "home")}
    killed = child(
        "from docex_migrate import checks, load_settings\n"
        "checks.run_checks(load_settings(), ['upgrade-from-empty', 'mixed-fleet'])\n",
        cwd=pg_env.workdir,
        env=environ,
    )
    deadline = time.time() + 60
    while not scratch_schemas() - before:
        assert killed.poll() is None and time.time() < deadline, "the check never created its scratch schemas"
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    left = scratch_schemas() - before
    assert left  # what a kill -9 leaves

    live = child(  # a check still running: holds its set, which must survive the sweep
        "import sys, sqlalchemy as sa\n"
        "from docex_migrate import load_settings\n"
        "from docex_migrate.backends import backend_for\n"
        "from docex_migrate.scratch import scratch_settings\n"
        "with scratch_settings(load_settings(), committed=True) as scratch:\n"
        "    backend = backend_for(scratch)\n"
        "    with backend.transaction('alive', create=True): pass\n"
        "    print(backend.namespace('alive'), flush=True)\n"
        "    sys.stdin.readline()\n",
        cwd=pg_env.workdir,
        env=environ,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    alive = live.stdout.readline().strip()
    try:
        result = cli("check", "--only", "single-head", "--only", "upgrade-from-empty")
        assert result.exit_code == 0, result.output
        remaining = scratch_schemas()
        assert not (left & remaining), "the killed check's schemas are still there"
        assert alive in remaining
    finally:
        live.communicate("\n", timeout=60)
    assert alive not in scratch_schemas()  # and its own run removed it at the end


def test_a_killed_provisions_template_directory_is_removed_by_the_next_but_not_a_live_ones(sqlite_env):
    code = (
        "import os, signal, sys\n"
        "from docex_migrate import fresh, load_settings\n"
        "from docex_migrate.chain import load_chain\n"
        "path = fresh.template(load_settings(), load_chain())\n"
        "print(path.parent, flush=True)\n"
        "if sys.argv[1] == 'die': os.kill(os.getpid(), signal.SIGKILL)\n"
        "sys.stdin.readline()\n"
    )
    dead = child(code.replace("sys.argv[1]", "'die'"), cwd=sqlite_env.workdir, stdout=subprocess.PIPE)
    dead_dir = Path(dead.communicate(timeout=120)[0].strip())
    live = child(code.replace("sys.argv[1]", "'live'"), cwd=sqlite_env.workdir, stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    live_dir = Path(live.stdout.readline().strip())
    try:
        assert dead_dir.is_dir() and live_dir.is_dir()
        old = time.time() - MIN_AGE - 5  # leftovers younger than MIN_AGE may be taking their lock
        for directory in (dead_dir, live_dir):
            os.utime(directory, (old, old))
        provision = subprocess.run(  # a fresh process builds its template (two tenants), and sweeps first
            [sys.executable, "-m", "docex_migrate", "provision", "acme", "globex"],
            cwd=sqlite_env.workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert provision.returncode == 0, provision.stderr
        assert not dead_dir.exists()
        assert live_dir.is_dir() and (live_dir / "head.db").is_file()
    finally:
        live.communicate("\n", timeout=60)
    assert not live_dir.exists()
    assert Path(tempfile.gettempdir()) == dead_dir.parent


# A restore of tenant acme from BACKUP, in a process of its own, that stops once its staged copy
# is checked (before it is linked into place), prints the staged file's path and waits for a line.
HELD_RESTORE = (
    "import sys\n"
    "from pathlib import Path\n"
    "from docex_migrate import api, load_settings\n"
    "from docex_migrate.backends.sqlite import restore\n"
    "checked = restore._check\n"
    "def held(tenant_id, staged, backup, revision):\n"
    "    checked(tenant_id, staged, backup, revision)\n"
    "    print(staged, flush=True)\n"
    "    sys.stdin.readline()\n"
    "restore._check = held\n"
    "api.restore(load_settings(), 'acme', Path(BACKUP))\n"
)


def _deprovisioned(tenant_id: str) -> Path:
    result = cli("deprovision", tenant_id, "--yes")
    assert result.exit_code == 0, result.output
    return Path(result.stdout.split("backup in ")[1].split()[0])


def _held_restore(sqlite_env, backup: Path) -> tuple[subprocess.Popen, Path]:
    code = HELD_RESTORE.replace("BACKUP", repr(str(backup)))
    held = child(code, cwd=sqlite_env.workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staged = held.stdout.readline().strip()
    assert staged, held.communicate(timeout=60)
    return held, sqlite_env.workdir / staged  # relative to the working directory, as the template


def _killed_restore(sqlite_env, backup: Path) -> Path:
    """What a restore killed with kill -9 (after its copy of the whole backup) leaves."""
    killed, staged = _held_restore(sqlite_env, backup)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert staged.is_file() and staged.stat().st_size == backup.stat().st_size  # a tenant's whole data
    return staged


def _new_file_mode() -> int:
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


def test_a_killed_restores_staged_copy_is_private_and_removed_by_the_next_restore_but_not_a_live_ones(sqlite_env):
    assert cli("provision", "acme").exit_code == 0
    backup = _deprovisioned("acme")
    folder = sqlite_env.workdir / "storage" / "tenant_acme"

    dead = _killed_restore(sqlite_env, backup)
    assert dead.parent == folder and dead.name.startswith(".docex.db.restoring-")
    assert dead.stat().st_mode & 0o777 == 0o600  # the tenant's data, readable by its owner only
    live, alive = _held_restore(sqlite_env, backup)
    try:
        assert alive.stat().st_mode & 0o777 == 0o600
        result = cli("restore", "acme", "--from", str(backup))
        assert result.exit_code == 0, result.output
        assert not dead.exists()  # swept: no live process held it
        assert alive.is_file()  # held by a live restore: left alone
    finally:
        _, err = live.communicate("\n", timeout=60)
    assert live.returncode != 0 and "created meanwhile" in err  # the tenant was restored meanwhile
    assert not alive.exists()
    assert (folder / "docex.db").stat().st_mode & 0o777 == _new_file_mode()  # as a provisioned tenant's file
    assert sorted(p.name for p in folder.iterdir()) == ["docex.db"]

    result = cli("deprovision", "acme", "--yes")
    assert result.exit_code == 0, result.output
    assert not folder.exists()


def test_deprovision_removes_a_killed_restores_leftovers_with_the_directory_but_never_a_file_not_its_own(sqlite_env):
    assert cli("provision", "acme").exit_code == 0
    backup = _deprovisioned("acme")
    folder = sqlite_env.workdir / "storage" / "tenant_acme"
    dead = _killed_restore(sqlite_env, backup)
    assert cli("provision", "acme").exit_code == 0  # the tenant comes back another way
    assert dead.is_file()

    result = cli("deprovision", "acme", "--yes")
    assert result.exit_code == 0, result.output
    assert not folder.exists()  # the killed restore's copy went with the tenant's directory
    assert "warning" not in result.stderr

    assert cli("provision", "acme").exit_code == 0
    (folder / "notes.txt").write_text("the operator's\n")
    result = cli("deprovision", "acme", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # never deleted: not docex-migrate's
    assert "notes.txt" in result.stderr and f"{folder} is kept" in result.stderr, result.stderr
    assert "notes.txt" in json.loads(result.stdout)["tenants"][0]["warnings"][0]


def test_deprovision_sweeps_a_staged_name_left_linked_to_the_tenant_but_not_a_look_alike(sqlite_env):
    """A restore killed after it linked its copy into place leaves the staged name as a second
    name of the tenant's file: deprovision removes it with the tenant (its backup holds the data).
    A name like a staged file's that is not a file (a symbolic link here) is never ours to remove."""
    assert cli("provision", "acme").exit_code == 0
    folder = sqlite_env.workdir / "storage" / "tenant_acme"
    linked = folder / f".docex.db.restoring-{'a' * 32}"
    os.link(folder / "docex.db", linked)
    outside = sqlite_env.workdir / "keep.txt"
    outside.write_text("not a tenant's\n")
    look_alike = folder / f".docex.db.restoring-{'b' * 32}"
    look_alike.symlink_to(outside)

    result = cli("deprovision", "acme", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == [look_alike.name]
    assert outside.read_text() == "not a tenant's\n"
    assert look_alike.name in result.stderr and f"{folder} is kept" in result.stderr, result.stderr
    backup = Path(result.stdout.split("backup in ")[1].split()[0])
    restored = cli("restore", "acme", "--from", str(backup))
    assert restored.exit_code == 0, restored.output

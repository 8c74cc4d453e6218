"""The installed console script and the plain Alembic CLI, as real subprocesses.

The wheel is built from this checkout and installed into a fresh virtualenv (reusing this
environment's dependencies), then run from an empty directory: it must find its revisions
inside the installed package, without the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import database_section, write_config

from docex_migrate.chain import load_chain

ROOT = Path(__file__).resolve().parents[1]
HEAD = load_chain().head
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with the wheel built from this checkout."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist"), str(ROOT)],
        check=True,
    )
    (wheel,) = (work / "dist").glob("docex_migrate-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
    )
    # Dependencies come from this environment, after the venv's own site-packages, so the
    # wheel's copy of docex_migrate is the one imported.
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def sh(bin_dir: Path, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("DOCEX_CONFIG", "DOCEX_DATABASE_URL")}
    environ.update(env or {})
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)


def test_wheel_carries_the_revisions(installed, tmp_path):
    out = sh(installed, "python", "-c", "from docex_migrate.chain import script_location; print(script_location())", cwd=tmp_path)
    location = Path(out.stdout.strip())
    assert installed.parent in location.parents, location
    assert sorted(p.name for p in (location / "versions").glob("s*.py")) == [f"{r}.py" for r in load_chain().order]


def test_readme_story_on_the_sqlite_default(installed, tmp_path):
    home = {"HOME": str(tmp_path / "home")}
    r = sh(installed, "docex-migrate", "provision", "acme-corp", "globex-corp", cwd=tmp_path, env=home)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "storage/tenant_acme-corp/docex.db").is_file()
    r = sh(installed, "docex-migrate", "status", "--json", cwd=tmp_path, env=home)
    assert [(s["tenant_id"], s["state"]) for s in json.loads(r.stdout)] == [("acme-corp", "current"), ("globex-corp", "current")]
    r = sh(installed, "docex-migrate", "upgrade", "--all-tenants", cwd=tmp_path, env=home)
    assert r.returncode == 0 and "nothing to upgrade" in r.stdout
    r = sh(installed, "docex-migrate", "downgrade", "base", "--tenant", "acme-corp", "--yes", cwd=tmp_path, env=home)
    assert r.returncode == 0, r.stderr
    r = sh(installed, "docex-migrate", "upgrade", "--tenant", "acme-corp", cwd=tmp_path, env=home)
    assert r.returncode == 0 and "base -> " + HEAD in r.stdout


def test_installed_check_compares_head_with_the_docex_dumps_it_ships(installed, tmp_path):
    """docex-compat reads DocEX's reference dumps from the package, not from a checkout."""
    r = sh(installed, "docex-migrate", "check", "--only", "docex-compat", "--json", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    (check,) = json.loads(r.stdout)["checks"]
    assert check["status"] == "passed" and "DocEX 2.9.10" in check["message"]


def test_the_installed_package_refuses_to_rewrite_its_own_revisions(installed, tmp_path):
    """`check --update-manifest` and `revision` write into the revision folder: never into
    site-packages, where the next install would silently undo it."""
    for args in (["check", "--update-manifest"], ["revision", "-m", "x"]):
        r = sh(installed, "docex-migrate", *args, cwd=tmp_path, env={"HOME": str(tmp_path)})
        assert r.returncode == 2 and "installed package" in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_errors_are_one_line_without_traceback(installed, tmp_path):
    r = sh(installed, "docex-migrate", "provision", "Acme;Corp", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert r.returncode == 2
    assert r.stderr.startswith("error: invalid tenant id") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "storage").exists()
    r = sh(installed, "docex-migrate", "provision", "Acme;Corp", "--verbose", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert "Traceback" in r.stderr


@pytest.mark.postgres
def test_postgres_provision_verify_and_password_never_printed(installed, tmp_path, pg_url):
    config = write_config(tmp_path / "pg.yaml", {"database": database_section("postgres", "inst_{tenant_id}", pg_url)})
    r = sh(installed, "docex-migrate", "provision", "acme_corp", "--verify", cwd=tmp_path, env={"DOCEX_CONFIG": str(config)})
    assert r.returncode == 0, r.stderr
    assert "inst_acme_corp" in r.stdout and "verified" in r.stdout

    bad = f"postgresql://{pg_url.username}:hunter2-secret@127.0.0.1:1/nowhere"
    r = sh(installed, "docex-migrate", "status", cwd=tmp_path, env={"DOCEX_DATABASE_URL": bad})
    assert r.returncode == 2
    assert "127.0.0.1:1/nowhere" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_plain_alembic_cli_still_works(installed, tmp_path, kind, request):
    env = {"HOME": str(tmp_path / "home")}
    tenant = "acme-corp" if kind == "sqlite" else "acme_corp"
    if kind == "postgres":
        url = request.getfixturevalue("pg_url")
        env["DOCEX_DATABASE_URL"] = url.render_as_string(hide_password=False)
        config = tmp_path / "c.yaml"
        config.write_text("database:\n  postgres:\n    schema_template: cli_{tenant_id}\n")
        env["DOCEX_CONFIG"] = str(config)
    ini = str(ROOT / "alembic.ini")
    r = sh(installed, "python", "-m", "alembic", "-c", ini, "-x", f"tenant={tenant}", "upgrade", "head", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "Running upgrade s6_docex_2_8_8 -> s7_docex_2_9_10" in r.stderr
    r = sh(installed, "python", "-m", "alembic", "-c", ini, "-x", f"tenant={tenant}", "current", cwd=tmp_path, env=env)
    assert HEAD in r.stdout
    r = sh(installed, "docex-migrate", "status", "--tenant", tenant, "--json", cwd=tmp_path, env=env)
    assert json.loads(r.stdout)[0]["state"] == "current"

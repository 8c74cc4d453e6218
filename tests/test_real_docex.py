"""The real DocEX package, each release in its own virtualenv (built once per test session) and
driven as a subprocess (tests/docex_driver.py), on SQLite and PostgreSQL.

docex 2.9.10 needs Python >= 3.13, found on PATH or under pyenv; docex 2.9.9 runs on 3.11.
Without them (or without PyPI) these tests skip with the reason; with
DOCEX_REQUIRE_REAL_DOCEX=1 (CI sets it) that is a failure instead.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DOCEX_2_9_10, cli, database_section, head, recognised_as, reported, tenant_snapshot, version_of

from docex_migrate.snapshot import differences

DRIVER = Path(__file__).resolve().parent / "docex_driver.py"


def _unavailable(reason: str):
    if os.environ.get("DOCEX_REQUIRE_REAL_DOCEX") == "1":
        pytest.fail(f"real DocEX unavailable: {reason} -- DOCEX_REQUIRE_REAL_DOCEX=1 forbids skipping", pytrace=False)
    pytest.skip(f"REAL DOCEX TESTS SKIPPED: {reason}")


def _version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
        major, minor = out.stdout.split()
        return int(major), int(minor)
    except Exception:
        return None


def find_python(low: tuple[int, int], high: tuple[int, int] = (3, 99)) -> str | None:
    """An interpreter with low <= version < high: this one, one on PATH, or one under pyenv."""
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [sys.executable]
    candidates += [shutil.which(f"python3.{minor}") for minor in range(low[1], 20)]
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.*/bin/python3"), reverse=True)
    for candidate in filter(None, candidates):
        version = _version(candidate)
        if version and low <= version < high:
            return candidate
    return None


def build_venv(factory, release: str, low: tuple[int, int], high: tuple[int, int] = (3, 99)) -> str:
    python = find_python(low, high)
    if python is None:
        _unavailable(f"docex=={release} needs Python {low[0]}.{low[1]}+ and none was found on PATH or under pyenv")
    venv = factory.mktemp(f"docex-{release}")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"docex=={release}",
            "psycopg[binary]",
            "psycopg2-binary",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        _unavailable(f"pip install docex=={release} failed: {done.stderr.strip()[-300:]}")
    return str(venv / "bin" / "python")


@pytest.fixture(scope="session")
def docex_2_9_10(tmp_path_factory) -> str:
    return build_venv(tmp_path_factory, "2.9.10", (3, 13))


@pytest.fixture(scope="session")
def docex_2_9_9(tmp_path_factory) -> str:
    return build_venv(tmp_path_factory, "2.9.9", (3, 11), (3, 13))


def docex(env, python: str, tenant_id: str, action: str = "list", basket: str = "invoices") -> dict:
    """Run DocEX itself on a tenant of this test's database."""
    if env.kind == "sqlite":
        database = database_section("sqlite", env.settings.sqlite.path_template)
        database["sqlite"]["path"] = "docex.db"
    else:
        database = database_section("postgres", env.settings.postgres.schema_template, env.url)
    arguments = {"workdir": str(env.workdir), "tenant": tenant_id, "action": action, "basket": basket, "database": database}
    done = subprocess.run([python, str(DRIVER), json.dumps(arguments)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tenant_created_by_docex_2_9_10_is_adopted_as_head(env, docex_2_9_10):
    assert docex(env, docex_2_9_10, "acme_corp", "use") == {"baskets": ["invoices"], "documents": ["invoices.txt"]}
    (row,) = json.loads(cli("status", "--json").stdout)
    stamped = recognised_as(env.settings, DOCEX_2_9_10)
    assert (row["state"], row["matches"], row["adopt"]) == ("unversioned", stamped, "adopt")
    result = cli("adopt", "acme_corp")
    assert result.exit_code == 0, result.output
    assert version_of(env, "acme_corp") == (stamped,)
    assert cli("upgrade", "--all-tenants").exit_code == 0
    (row,) = json.loads(cli("status", "--json").stdout)
    assert row["state"] == "current"


@pytest.mark.released_head
def test_tenant_created_by_docex_2_9_9_upgrades_to_exactly_what_2_9_10_creates(env, docex_2_9_9, docex_2_9_10):
    assert docex(env, docex_2_9_9, "old_corp", "use", "contracts") == {"baskets": ["contracts"], "documents": ["contracts.txt"]}
    result = cli("adopt", "old_corp", "--json")
    assert result.exit_code == 0, result.output
    assert reported(result.stdout)[0]["to_revision"] == "s6_docex_2_8_8"
    assert cli("upgrade", "--all-tenants").exit_code == 0

    docex(env, docex_2_9_10, "new_corp", "use")  # what DocEX 2.9.10 itself creates
    assert differences(tenant_snapshot(env, "new_corp"), tenant_snapshot(env, "old_corp")) == []
    # The old tenant's baskets and documents are intact and readable by DocEX 2.9.10.
    assert docex(env, docex_2_9_10, "old_corp") == {"baskets": ["contracts"], "documents": ["contracts.txt"]}


def test_docex_2_9_10_uses_a_provisioned_tenant_and_adds_nothing(env, docex_2_9_10):
    assert cli("provision", "fresh_corp").exit_code == 0
    before = tenant_snapshot(env, "fresh_corp")
    assert docex(env, docex_2_9_10, "fresh_corp", "use", "receipts") == {"baskets": ["receipts"], "documents": ["receipts.txt"]}
    assert tenant_snapshot(env, "fresh_corp") == before  # DocEX's own schema setup found nothing to add
    assert version_of(env, "fresh_corp") == (head(),)


def test_tenant_made_by_real_docex_2_9_10_and_adopted_verifies_clean(env, docex_2_9_10):
    assert docex(env, docex_2_9_10, "acme_corp", "use") == {"baskets": ["invoices"], "documents": ["invoices.txt"]}
    assert cli("provision", "fresh_corp").exit_code == 0
    assert cli("adopt", "acme_corp").exit_code == 0
    result = cli("verify", "--all-tenants", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["tenant_id"]: (r["revision"], r["state"]) for r in json.loads(result.stdout)}
    assert rows == {"acme_corp": (recognised_as(env.settings, DOCEX_2_9_10), "ok"), "fresh_corp": (head(), "ok")}

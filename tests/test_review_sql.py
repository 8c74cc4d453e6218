"""upgrade --sql: per tenant, the script that takes it to the target, written and never run; a
tenant migrated by running that script is identical to one the tool migrated. Both backends,
the real chain (s6 and s7 rebuild tables on SQLite: the batch steps need each table as it is)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing

from helpers import head, migrate_to, tenant_snapshot, version_of
from test_runs import cli

START = "s5_docex_2_8_4"


def apply(env, script) -> subprocess.CompletedProcess[str] | None:
    """Run a reviewed script as a DBA would: psql, or sqlite3's executescript on the file."""
    if env.kind == "sqlite":
        with closing(sqlite3.connect(env.workdir / env.namespace("scripted"), isolation_level=None)) as db:
            db.executescript(script.read_text())
        return None
    url = env.url.set(drivername="postgresql").render_as_string(False)
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-f", str(script)], capture_output=True, text=True)


def test_a_tenant_migrated_by_its_script_equals_one_the_tool_migrated(env, tmp_path):
    assert cli("provision", "scripted", "by_tool", "current").exit_code == 0
    for tenant in ("scripted", "by_tool"):
        migrate_to(env, tenant, START, downgrade=True)
    before = tenant_snapshot(env, "scripted")

    result = cli("upgrade", "--all-tenants", "--sql", "--output", str(tmp_path / "sql"), "--json")
    assert result.exit_code == 0, result.output
    rows = {r["tenant_id"]: r for r in json.loads(result.stdout)}
    assert rows["current"]["message"] == "already at the target"
    assert "script written" in rows["scripted"]["message"]
    assert version_of(env, "scripted") == (START,) and tenant_snapshot(env, "scripted") == before  # nothing ran
    written = sorted(p.name for p in (tmp_path / "sql").iterdir())
    assert written == (
        ["by_tool.sql", "scripted.sql"] if env.kind == "sqlite" else ["all-tenants.sql", "by_tool.sql", "scripted.sql"]
    )
    script = tmp_path / "sql" / "scripted.sql"
    text = script.read_text()
    assert text.count("COMMIT;") == 1 and ("pg_advisory_xact_lock" in text or "BEGIN IMMEDIATE" in text)

    done = apply(env, script)
    assert done is None or done.returncode == 0, done.stderr
    assert cli("upgrade", "--tenant", "by_tool").exit_code == 0
    assert version_of(env, "scripted") == version_of(env, "by_tool") == (head(),)
    assert tenant_snapshot(env, "scripted") == tenant_snapshot(env, "by_tool")

    # Run again, the script finds its tenant moved on and stops, changing nothing.
    after = tenant_snapshot(env, "scripted")
    if env.kind == "sqlite":
        try:
            apply(env, script)
            raise AssertionError("a stale script ran")
        except sqlite3.IntegrityError:
            pass
    else:
        done = apply(env, script)
        assert done is not None and done.returncode != 0 and "is no longer at" in done.stderr
    assert tenant_snapshot(env, "scripted") == after and version_of(env, "scripted") == (head(),)

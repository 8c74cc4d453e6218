"""Small helpers shared by the tests: run a command, open a tenant, snapshot it, migrate it to a revision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner, Result

from docex_migrate import revision_snapshots
from docex_migrate.chain import SCRIPT_LOCATION_ENV, load_chain
from docex_migrate.cli import app
from docex_migrate.runner import migrate_tenant
from docex_migrate.schema import metadata
from docex_migrate.snapshot import snapshot

# The revision that is DocEX 2.9.10's schema, the newest release. Not necessarily the head: a
# revision may be added on top (tests that mean "the head" ask the chain, head()).
DOCEX_2_9_10 = "s7_docex_2_9_10"

# The fault tests' chain: three small steps; the second fails, names its tenant in a marker file
# or sleeps when the environment says so (STEPS_FAIL_TENANT, STEPS_MARKER, STEPS_SLEEP...).
STEPS = Path(__file__).resolve().parent / "chains" / "steps"

# The documented shape of every changing command's --json (and of every --plan's).
REPORT_SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "docs" / "schemas" / "command-report.schema.json").read_text(encoding="utf-8")
)


def report_of(stdout: str) -> dict:
    """A changing command's --json: one object, checked against docs/schemas/command-report.schema.json."""
    report = json.loads(stdout)
    jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(report)
    return report


def reported(stdout: str) -> list[dict]:
    """The tenants of a changing command's --json (validated as report_of does)."""
    return report_of(stdout)["tenants"]


# DocEX's security section for a database per tenant (a schema or a file each), the model this tool serves.
DATABASE_LEVEL = {"multi_tenancy_model": "database_level", "tenant_database_routing": True}


def database_section(kind: str, template: str, url: URL | None = None) -> dict:
    """DocEX's ``database`` section: SQLite files at ``template`` (path_template), or PostgreSQL
    schemas named by ``template`` (schema_template) in the database ``url`` names, with its
    credentials."""
    if kind == "sqlite":
        return {"type": "sqlite", "sqlite": {"path_template": template}}
    assert url is not None
    postgres = {
        "host": url.host,
        "port": url.port or 5432,
        "database": url.database,
        "user": url.username,
        "password": url.password or "",
        "schema_template": template,
    }
    return {"type": "postgres", "postgres": postgres}


def write_config(path: Path, data: dict) -> Path:
    """Write ``data`` as a DocEX config file (YAML), creating its folder; the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: str, input: str | None = None) -> Result:
    """One docex-migrate command, run in this process through typer's CliRunner. It sees what the
    test's fixtures set: their working directory and environment (DOCEX_CONFIG, HOME, ...), nothing
    added. CliRunner's defaults otherwise: an exception ends up in the result (exit_code 1,
    result.exception), stderr is kept apart from stdout. ``input`` is the command's stdin (the
    answer to a confirmation prompt)."""
    return CliRunner().invoke(app, list(args), input=input)


def start(env, *args: str, **extra: str) -> subprocess.Popen:
    """docex-migrate ARGS as its own process on the test's config and working directory, on the
    STEPS chain, with ``extra`` added to its environment (DOCEX_CONFIG too may be overridden);
    stdout and stderr are pipes, as text."""
    environ = {**os.environ, "DOCEX_CONFIG": str(env.config_file), SCRIPT_LOCATION_ENV: str(STEPS), **extra}
    return subprocess.Popen(
        [sys.executable, "-m", "docex_migrate", *args],
        cwd=env.workdir,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def head() -> str:
    return load_chain().head


def head_tables() -> set[str]:
    """The tables of a tenant at head, alembic_version aside: the package's tenant metadata, which
    the head must equal (the metadata-matches-head check). DocEX 2.9.10's 11 until a revision adds one."""
    return set(metadata.tables)


def recognised_as(settings, revision: str) -> str:
    """The revision adopt stamps on a tenant whose schema is ``revision``'s: the newest revision
    with exactly that schema (a later revision that changes nothing has the same one)."""
    chain = load_chain()
    snaps = revision_snapshots.for_chain(settings, chain)
    return [r for r in chain.order if snaps[r] == snaps[revision]][-1]


def tenant_engine(env, tenant_id: str) -> sa.Engine:
    """A plain engine on the tenant (search_path set at connect on PostgreSQL)."""
    if env.kind == "sqlite":
        return sa.create_engine(f"sqlite:///{env.namespace(tenant_id)}", poolclass=NullPool)
    return sa.create_engine(env.url, poolclass=NullPool, connect_args={"options": f"-csearch_path={env.namespace(tenant_id)}"})


def applied(env, tenant_id: str) -> list[str]:
    """The steps the small chain tests/chains/steps recorded in the tenant, in order."""
    engine = tenant_engine(env, tenant_id)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT step FROM applied ORDER BY step")).scalars().all()
    engine.dispose()
    return list(rows)


def tenant_snapshot(env, tenant_id: str) -> dict:
    engine = tenant_engine(env, tenant_id)
    try:
        with engine.connect() as conn:
            return snapshot(conn, None if env.kind == "sqlite" else env.namespace(tenant_id))
    finally:
        engine.dispose()


def migrate_to(env, tenant_id: str, revision: str | None, *, downgrade: bool = False) -> None:
    backend = env.backend
    try:
        migrate_tenant(backend, tenant_id, revision, downgrade=downgrade, create=not downgrade)
    finally:
        backend.dispose()


def version_of(env, tenant_id: str) -> tuple[str, ...]:
    return env.backend.read_states([tenant_id])[tenant_id].revisions


def ensure_in_child(config_file: str, workdir: str, tenant_id: str, start_at: float) -> str:
    """Run ensure_tenant in a spawned process, all children starting at the same instant."""
    import os
    import time

    from docex_migrate import ensure_tenant, load_settings

    os.chdir(workdir)
    settings = load_settings(config_file)
    time.sleep(max(0.0, start_at - time.time()))
    return ensure_tenant(tenant_id, settings).action


def corrupt(env, tenant_id: str) -> None:
    """A tenant no one can read: a SQLite file that is not a database, or (PostgreSQL) a
    version table of another shape, what a hand-made or foreign tool leaves."""
    if env.kind == "sqlite":
        path = env.workdir / env.namespace(tenant_id)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"this is not a database" * 100)
    else:  # a version table of another shape: what a hand-made or foreign tool leaves
        with env.engine().begin() as conn:
            schema = env.namespace(tenant_id)
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            conn.exec_driver_sql(f'CREATE TABLE "{schema}".alembic_version (version text)')


def grant_read(env, role: str, tenant_id: str) -> None:
    """USAGE on the tenant's schema and SELECT on its tables: what a read-only role is given."""
    schema = env.namespace(tenant_id)
    with env.engine().begin() as conn:
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {role}')


def template_only_config(env) -> Path:
    """The test's config without its credentials, so $DOCEX_DATABASE_URL picks the role."""
    data = yaml.safe_load(env.config_file.read_text())
    path = env.workdir / "reader.yaml"
    data["database"]["postgres"] = {"schema_template": data["database"]["postgres"]["schema_template"]}
    path.write_text(yaml.safe_dump(data))
    return path

"""Fixtures: real SQLite files under tmp_path and a real PostgreSQL database per test run.

PostgreSQL comes from $DOCEX_TEST_DATABASE_URL (a server URL; this run creates its own uniquely
named database there and drops it afterwards), else from testcontainers when a Docker engine
answers, else the PostgreSQL tests are skipped. With DOCEX_REQUIRE_POSTGRES=1 (CI sets it) a
missing PostgreSQL is an error, not a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import DATABASE_LEVEL, STEPS, database_section, write_config
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from docex_migrate.backends import Backend, backend_for
from docex_migrate.chain import SCRIPT_LOCATION_ENV, script_location
from docex_migrate.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "reference"


def _docker_answers() -> bool:
    """Whether a Docker engine answers, asked over a socket we open and close ourselves (the
    docker client leaks its socket when nothing answers, a ResourceWarning, an error here)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(host[len("unix://") :])
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in sock.recv(1024)
    except OSError:
        return False


def _server_url() -> tuple[URL | None, object | None]:
    env = os.environ.get("DOCEX_TEST_DATABASE_URL")
    if env:
        return make_url(env).set(drivername="postgresql+psycopg"), None
    if not _docker_answers():
        return None, None
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:15", driver="psycopg").start()
    return make_url(container.get_connection_url()), container


@pytest.fixture(autouse=True)
def _no_ledger_write_failed(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A run ledger write that fails is only a warning to the user (the ledger never stops a
    migration), so a bug in what we write would pass every test unseen: a run that lost the rows
    of the tenants it migrated once did. Any test whose commands log one fails, unless it makes
    the ledger fail on purpose (marked ledger_may_fail)."""
    yield
    if request.node.get_closest_marker("ledger_may_fail"):
        return
    failed = [r.getMessage() for r in caplog.get_records("call") if "could not record run" in r.getMessage()]
    assert not failed, f"a run ledger write failed: {failed[0]}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[URL]:
    """A fresh, uniquely named PostgreSQL database for this test run, dropped at the end."""
    server, container = _server_url()
    if server is None:
        reason = "no PostgreSQL: set DOCEX_TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
        if os.environ.get("DOCEX_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " -- DOCEX_REQUIRE_POSTGRES=1 forbids skipping", pytrace=False)
        pytest.skip(reason)
    name = f"docex_migrate_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        if container is not None:
            container.stop()


@dataclass
class Env:
    """One backend, configured through a real DocEX config file, isolated for one test."""

    kind: str  # "sqlite" or "postgres"
    config_file: Path
    workdir: Path
    settings: Settings
    url: URL | None = None

    @property
    def backend(self) -> Backend:
        return backend_for(self.settings)

    def engine(self) -> sa.Engine:
        assert self.url is not None
        return sa.create_engine(self.url, poolclass=NullPool)

    def namespace(self, tenant_id: str) -> str:
        return self.backend.namespace(tenant_id)

    def exists(self, tenant_id: str) -> bool:
        return self.backend.read_states([tenant_id])[tenant_id].exists

    def everything(self) -> set[str]:
        """Every schema in the database, or every file under the working directory."""
        if self.kind == "sqlite":
            return {str(p.relative_to(self.workdir)) for p in self.workdir.rglob("*") if p.name != self.config_file.name}
        with self.engine().connect() as conn:
            return set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars())


def _make_env(request, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOCEX_DATABASE_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    url = request.getfixturevalue("pg_url") if kind == "postgres" else None
    config_file = tmp_path / "docex.yaml"
    template = "storage/tenant_{tenant_id}/docex.db" if kind == "sqlite" else f"t{uuid.uuid4().hex[:8]}_" + "{tenant_id}"
    write_config(config_file, {"database": database_section(kind, template, url), "security": DATABASE_LEVEL})
    monkeypatch.setenv("DOCEX_CONFIG", str(config_file))
    return Env(kind, config_file, tmp_path, load_settings(), url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """Parametrised over both backends. PostgreSQL tenants get a schema prefix unique to the test,
    so tests sharing the run's database never see each other's tenants."""
    return _make_env(request, request.param, tmp_path, monkeypatch)


@pytest.fixture
def pg_env(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """PostgreSQL only, for what only PostgreSQL has (schemas, search_path, enum types)."""
    return _make_env(request, "postgres", tmp_path, monkeypatch)


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """The embedded default only: no config file at all."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOCEX_DATABASE_URL", raising=False)
    monkeypatch.delenv("DOCEX_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return Env("sqlite", tmp_path / "no-config.yaml", tmp_path, load_settings())


@pytest.fixture
def steps(env, monkeypatch):
    """``env`` on the small STEPS chain (tests/chains/steps), for the fault tests."""
    monkeypatch.setenv(SCRIPT_LOCATION_ENV, str(STEPS))
    return env


@pytest.fixture
def pg_steps(pg_env, monkeypatch):
    """``pg_env`` on the STEPS chain."""
    monkeypatch.setenv(SCRIPT_LOCATION_ENV, str(STEPS))
    return pg_env


@pytest.fixture
def chain_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The chain in use (the real one, or $DOCEX_MIGRATE_SCRIPT_LOCATION's), copied into
    tmp_path/chain and selected through the override variable, for tests that add, edit or
    break revisions."""
    folder = tmp_path / "chain"
    shutil.copytree(script_location(), folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv(SCRIPT_LOCATION_ENV, str(folder))
    return folder


@pytest.fixture
def reader_role(pg_env):
    """A role that may only connect and read: CONNECT, USAGE and SELECT, nothing else."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    database = pg_env.url.database
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f'REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC')
        conn.exec_driver_sql(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
        conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    yield role
    with pg_env.engine().begin() as conn:
        conn.exec_driver_sql(f'GRANT TEMPORARY ON DATABASE "{database}" TO PUBLIC')  # PUBLIC never had CREATE
        conn.exec_driver_sql(f"DROP OWNED BY {role}")
        conn.exec_driver_sql(f"DROP ROLE {role}")

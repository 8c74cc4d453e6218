"""docex-migrate fleet benchmarks: every figure next to a baseline measured in the same run.

    python benchmarks/bench.py [--backend sqlite|postgresql|both] [--n 1000] [--fleet 10000]
                               [--naive-sample 10] [--jobs 1,2,4] [--repeat 3] [--suite migrate|verify|fleet|all]
                               [--verify-fleet 1000] [--verify-fleet-sqlite 1000]

The figures on fleets of real tenants (ensure_tenant, provision, no-op, status, verify at 10,000
tenants, against the empty database and plain SQL) are benchmarks/fleet.py's (`--suite fleet`).

Baselines:
- floor: the same DDL replayed directly in one session, one transaction per tenant (for
  provisioning: the head schema's DDL dumped from a freshly provisioned tenant);
- upgrade floor: what any per-tenant-atomic tool must at least send, per tenant, through one
  psql (PostgreSQL) or one sqlite3 (SQLite) process: BEGIN, the tenant's lock, SELECT
  version_num, the revision's DDL, UPDATE alembic_version, COMMIT;
- Alembic in-process loop: `command.upgrade` per tenant in one Python process, on the tenant's
  connection passed through Config.attributes (Alembic's cookbook recipe);
- naive: `alembic -x tenant=T upgrade head` as a subprocess per tenant, the loop users write
  today. It costs about a second per tenant, so by default it runs on a sample of tenants and
  is reported per tenant and scaled to N (pass --naive-sample N to run all of them).

PostgreSQL comes from $DOCEX_BENCH_DATABASE_URL (else $DOCEX_TEST_DATABASE_URL, else the local
server); the benchmark creates its own database there and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEAD = "s7_docex_2_9_10"
BENCH_REVISION = '''"""benchmark: a nullable column and an index on document

Revision ID: bench_note
Revises: s7_docex_2_9_10
"""
import sqlalchemy as sa

from alembic import op

revision = "bench_note"
down_revision = "s7_docex_2_9_10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("document", sa.Column("bench_note", sa.String(100), nullable=True))
    op.create_index("ix_document_bench_note", "document", ["bench_note"])


def downgrade() -> None:
    op.drop_index("ix_document_bench_note", table_name="document")
    with op.batch_alter_table("document") as batch:
        batch.drop_column("bench_note")
'''
FLOOR_UPGRADE = [
    "ALTER TABLE document ADD COLUMN bench_note VARCHAR(100)",
    "CREATE INDEX ix_document_bench_note ON document (bench_note)",
]
UPDATE_VERSION = "UPDATE alembic_version SET version_num = '{new}' WHERE version_num = '{old}'"
# Alembic's cookbook loop: one process, one engine, command.upgrade per tenant on its connection.
ALEMBIC_LOOP = """
import sys, sqlalchemy as sa
from alembic import command
from alembic.config import Config
ini, kind, url, target, *tenants = sys.argv[1:]
engine = sa.create_engine(url) if kind == "postgresql" else None
for tenant in tenants:
    config = Config(ini)
    if engine is None:
        sqlite = sa.create_engine(f"sqlite:///storage/tenant_{tenant}/docex.db")
        with sqlite.begin() as connection:
            config.attributes.update(connection=connection, tenant_id=tenant)
            command.upgrade(config, target)
        sqlite.dispose()
        continue
    with engine.begin() as connection:
        connection.exec_driver_sql(f'SET LOCAL search_path TO "tenant_{tenant}"')
        config.attributes.update(connection=connection, tenant_id=tenant, version_table_schema=f"tenant_{tenant}")
        command.upgrade(config, target)
"""
RSS_WRAPPER = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "p = subprocess.run(sys.argv[1:], capture_output=True); "
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)"
)


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


class Backend:
    """Where one benchmark run keeps its tenants, and how to reach them without docex-migrate."""

    def __init__(self, kind: str, workdir: Path, server_url: str | None) -> None:
        self.kind, self.workdir = kind, workdir
        self.env = {k: v for k, v in os.environ.items() if k not in ("DOCEX_CONFIG", "DOCEX_DATABASE_URL")}
        self.env["HOME"] = str(workdir)
        self.database = None
        if kind == "postgresql":
            url = sa.make_url(server_url)
            self.database = f"docex_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(self._dsn(url), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
            self.url = url.set(database=self.database)
            self.env["DOCEX_DATABASE_URL"] = self.url.render_as_string(hide_password=False).replace("+psycopg", "")
            self.server = url

    @staticmethod
    def _dsn(url: sa.URL) -> str:
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def close(self) -> None:
        if self.database:
            with psycopg.connect(self._dsn(self.server), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def tool(self, *args: str, extra_env: dict | None = None, expect: int = 0) -> tuple[float, int]:
        """Wall seconds and peak RSS (KiB) of one docex-migrate command, as a user runs it."""
        env = {**self.env, **(extra_env or {})}
        out = subprocess.run(
            [sys.executable, "-c", RSS_WRAPPER, str(BIN / "docex-migrate"), *args],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        seconds, rss, code = out.stdout.split()
        if code != str(expect):
            raise SystemExit(f"docex-migrate {' '.join(args[:3])} ... failed with exit {code}")
        return float(seconds), int(rss)

    def path(self, tenant: str) -> Path:
        return self.workdir / f"storage/tenant_{tenant}/docex.db"

    def schema(self, tenant: str) -> str:
        return f"tenant_{tenant}"

    # --- the floor: DDL replayed directly, one session, one transaction per tenant ---------
    def head_ddl(self, tenant: str) -> list[str]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.path(tenant)) as db:
                rows = db.execute(
                    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'alembic_version'"
                    " ORDER BY type = 'index', rowid"
                ).fetchall()
            return [r[0] for r in rows]
        dump = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", "-n", self.schema(tenant), self._dsn(self.url)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        body = "\n".join(line for line in dump.splitlines() if line and not line.startswith(("--", "SET ", "SELECT ", "\\")))
        statements = [s.strip() for s in body.split(";") if s.strip() and not s.strip().startswith("CREATE SCHEMA")]
        statements = [s for s in statements if "alembic_version" not in s]
        return [s.replace(f"{self.schema(tenant)}.", "") for s in statements]

    def floor(self, tenants: list[str], statements: list[str], create: bool) -> float:
        started = time.perf_counter()
        if self.kind == "sqlite":
            for tenant in tenants:
                path = self.path(tenant)
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, isolation_level=None)
                db.execute("BEGIN")
                for statement in statements:
                    db.execute(statement)
                db.execute("COMMIT")
                db.close()
            return time.perf_counter() - started
        with psycopg.connect(self._dsn(self.url)) as conn:
            for tenant in tenants:
                with conn.transaction():
                    if create:
                        conn.execute(f'CREATE SCHEMA "{self.schema(tenant)}"')
                    conn.execute(f'SET LOCAL search_path TO "{self.schema(tenant)}"')
                    for statement in statements:
                        conn.execute(statement)
        return time.perf_counter() - started

    def upgrade_floor(self, tenants: list[str], statements: list[str], old: str, new: str) -> float:
        """Seconds for one psql / sqlite3 process to migrate every tenant as a per-tenant-atomic
        tool at least must: lock, read the revision, the DDL, update the revision, commit."""
        update = UPDATE_VERSION.format(old=old, new=new)
        lines = []
        for tenant in tenants:
            if self.kind == "sqlite":
                lines.append(f".open {self.path(tenant)}")
                lines.append("BEGIN IMMEDIATE;")
            else:
                schema = self.schema(tenant)
                lines.append(f'BEGIN; SET LOCAL search_path TO "{schema}";')
                lines.append(f"SELECT pg_advisory_xact_lock(hashtextextended('{schema}', 0));")
            lines.append("SELECT version_num FROM alembic_version;")
            lines += [f"{statement};" for statement in statements]
            lines.append(f"{update}; COMMIT;")
        script = "\n".join(lines) + "\n"
        if self.kind == "sqlite":
            command = ["sqlite3", "-bail", ":memory:"]
        else:
            command = ["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", self._dsn(self.url)]
        started = time.perf_counter()
        subprocess.run(command, input=script, text=True, capture_output=True, check=True)
        return time.perf_counter() - started

    def alembic_loop(self, tenants: list[str], ini: Path, target: str, extra_env: dict | None = None) -> float:
        """Seconds for the Alembic in-process loop over ``tenants``, whole process included."""
        url = "" if self.kind == "sqlite" else self.url.set(drivername="postgresql+psycopg").render_as_string(False)
        env = {**self.env, **(extra_env or {})}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", ALEMBIC_LOOP, str(ini), self.kind, url, target, *tenants],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            check=True,
        )
        return time.perf_counter() - started

    def drop_floor_tenants(self, tenants: list[str]) -> None:
        if self.kind == "sqlite":
            for tenant in tenants:
                shutil.rmtree(self.path(tenant).parent, ignore_errors=True)
            return
        with psycopg.connect(self._dsn(self.url), autocommit=True) as conn:
            for tenant in tenants:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema(tenant)}" CASCADE')

    # --- a large fleet of real tenants at head, for verify (every table, index and key) -------
    def make_real_fleet(self, tenants: list[str], template: str) -> None:
        """Tenants identical to ``template`` (provisioned by docex-migrate), made quickly: SQLite
        files copied; PostgreSQL schemas given the template's DDL (pg_dump) and version row,
        a few tenants per transaction (each creation takes locks from the server's shared pool)."""
        if self.kind == "sqlite":
            for tenant in tenants:
                self.path(tenant).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path(template), self.path(tenant))
            return
        ddl = self.head_ddl(template)
        version = [
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
            f"INSERT INTO alembic_version VALUES ('{HEAD}')",
        ]
        with psycopg.connect(self._dsn(self.url), autocommit=True) as conn:
            for start in range(0, len(tenants), 10):
                conn.execute(
                    "".join(
                        f'CREATE SCHEMA "{self.schema(t)}"; SET search_path TO "{self.schema(t)}"; '
                        + "".join(f"{statement}; " for statement in ddl + version)
                        for t in tenants[start : start + 10]
                    )
                )


@contextmanager
def bench_chain() -> Path:
    """The real chain plus one benchmark revision, with an alembic.ini for the naive loop."""
    folder = Path(tempfile.mkdtemp(prefix="docex_bench_chain_"))
    try:
        shutil.copytree(ROOT / "alembic", folder / "alembic", ignore=shutil.ignore_patterns("__pycache__"))
        (folder / "alembic" / "versions" / "bench_note.py").write_text(BENCH_REVISION)
        ini = (ROOT / "alembic.ini").read_text().replace("%(here)s/alembic", str(folder / "alembic"))
        (folder / "alembic.ini").write_text(ini)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def naive_loop(backend: Backend, tenants: list[str], ini: Path, extra_env: dict | None = None) -> float:
    """Seconds per tenant of `alembic -x tenant=T upgrade head`, one subprocess each."""
    env = {**backend.env, **(extra_env or {})}
    started = time.perf_counter()
    for tenant in tenants:
        subprocess.run(
            [str(BIN / "alembic"), "-c", str(ini), "-x", f"tenant={tenant}", "upgrade", "head"],
            cwd=backend.workdir,
            env=env,
            capture_output=True,
            check=True,
        )
    return (time.perf_counter() - started) / len(tenants)


def run_backend(kind: str, args: argparse.Namespace, rows: list[dict]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"docex_bench_{kind}_"))
    server = (
        os.environ.get("DOCEX_BENCH_DATABASE_URL")
        or os.environ.get("DOCEX_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    backend = Backend(kind, workdir, server if kind == "postgresql" else None)

    def record(metric: str, n: int, ours: float, baseline: float | None, baseline_name: str, rss: int | None = None) -> None:
        row = {
            "backend": kind,
            "metric": metric,
            "n": n,
            "ours_s": round(ours, 3),
            "baseline": baseline_name,
            "baseline_s": None if baseline is None else round(baseline, 3),
            "ratio": None if not baseline else round(ours / baseline, 2),
            "peak_rss_mb": rss and round(rss / 1024, 1),
        }
        rows.append(row)
        ratio = f"{row['ratio']:>7}x" if row["ratio"] is not None else "       -"
        base = f"{row['baseline_s']:>9.3f}" if row["baseline_s"] is not None else "        -"
        mem = f"{row['peak_rss_mb']:>7} MB" if rss else ""
        print(f"{kind:10} {metric:42} {n:>6} {ours:>9.3f} {base} {ratio} {baseline_name:28} {mem}", flush=True)

    try:
        n = args.n
        tenants = ids("p", n)
        # 1. provision N fresh tenants: docex-migrate (one command) vs the head DDL replayed directly.
        #    The command's fixed cost (interpreter, imports, one-time template) is measured with one
        #    tenant, so the per-tenant figure compares like with like.
        one, _ = backend.tool("provision", "single")
        ours, _ = backend.tool("provision", *tenants)
        ddl = backend.head_ddl(tenants[0])
        floor_tenants = ids("f", n)
        floor = backend.floor(floor_tenants, ddl, create=True)
        backend.drop_floor_tenants(floor_tenants)
        record("provision (whole command)", n, ours, floor, "floor: head DDL replayed")
        record(
            "provision, per tenant (ms, fixed cost out)",
            n,
            (ours - one) / (n - 1) * 1000,
            floor / n * 1000,
            f"floor per tenant (fixed {one:.2f} s)",
        )
        backend.drop_floor_tenants(["single"])
        if args.naive_sample:
            sample = ids("n", min(args.naive_sample, n))
            per_tenant = naive_loop(backend, sample, ROOT / "alembic.ini")
            record("provision", n, ours, per_tenant * n, f"naive loop ({len(sample)} measured)")
            backend.drop_floor_tenants(sample)

        with bench_chain() as chain:
            override = {"DOCEX_MIGRATE_SCRIPT_LOCATION": str(chain / "alembic")}
            ini = chain / "alembic.ini"
            undo = ["DROP INDEX ix_document_bench_note", "ALTER TABLE document DROP COLUMN bench_note"]

            def downgrade_all() -> None:
                backend.upgrade_floor(tenants, undo, "bench_note", HEAD)

            # 2. upgrade-all by one new revision: the same-run upgrade floor, the Alembic
            #    in-process loop, and docex-migrate at each --jobs; medians of --repeat runs.
            # Each repeat times the floor, the Alembic loop and every --jobs value in turn (the
            # --jobs values rotated), so that none of them always runs first or last.
            floors, loops = [], []
            runs: dict[int, list[float]] = {jobs: [] for jobs in args.jobs}
            for repeat in range(args.repeat):
                floors.append(backend.upgrade_floor(tenants, FLOOR_UPGRADE, HEAD, "bench_note"))
                downgrade_all()
                loops.append(backend.alembic_loop(tenants, ini, "head", override))
                downgrade_all()
                shift = repeat % len(args.jobs)
                for jobs in args.jobs[shift:] + args.jobs[:shift]:
                    seconds, _ = backend.tool("upgrade", "--all-tenants", "--jobs", str(jobs), extra_env=override)
                    runs[jobs].append(seconds)
                    downgrade_all()
            floor, loop = statistics.median(floors), statistics.median(loops)
            print(f"{kind:10} {'  (upgrade floor, Alembic in-process loop)':42} {n:>6} {floor:>9.3f} {loop:>9.3f}", flush=True)
            record("Alembic in-process loop, upgrade +1", n, loop, floor, "upgrade floor (psql/sqlite3)")
            for jobs in args.jobs:
                seconds = statistics.median(runs[jobs])
                record(f"upgrade-all +1 revision (--jobs {jobs})", n, seconds, floor, "upgrade floor (psql/sqlite3)")
                record(f"upgrade-all +1 revision (--jobs {jobs})", n, seconds, loop, "Alembic in-process loop")
            if args.naive_sample:
                sample = tenants[: args.naive_sample]
                per_tenant = naive_loop(backend, sample, ini, override)
                backend.upgrade_floor(sample, undo, "bench_note", HEAD)
                seconds, _ = backend.tool("upgrade", "--all-tenants", extra_env=override)
                record("upgrade-all +1 revision", n, seconds, per_tenant * n, f"naive loop ({len(sample)} measured)")
                downgrade_all()

    finally:
        backend.close()
        shutil.rmtree(workdir, ignore_errors=True)


def run_verify(kind: str, args: argparse.Namespace, rows: list[dict]) -> None:
    """`verify --all-tenants` (the whole command) over fleets of real tenants at head: every
    tenant's catalog is fingerprinted and compared, which is what a fleet of identical tenants
    costs; then the same fleet with a few tenants drifted by hand (distinct catalogs)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"docex_bench_verify_{kind}_"))
    server = (
        os.environ.get("DOCEX_BENCH_DATABASE_URL")
        or os.environ.get("DOCEX_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    backend = Backend(kind, workdir, server if kind == "postgresql" else None)
    sizes = args.verify_fleet if kind == "postgresql" else args.verify_fleet_sqlite
    target = {"postgresql": {1000: "< 10 s", 10000: "< 60 s"}, "sqlite": {1000: "< 5 s"}}[kind]
    try:
        backend.tool("provision", "template")
        made: list[str] = []
        for size in sorted(sizes):
            fleet = ids("v", size)
            started = time.perf_counter()
            backend.make_real_fleet(fleet[len(made) :], "template")
            made = fleet
            print(f"# {kind}: {size} tenants made in {time.perf_counter() - started:.1f} s", flush=True)
            total = size + 1
            seconds, rss = backend.tool("verify", "--all-tenants", "--json")
            rows.append(
                {
                    "backend": kind,
                    "metric": "verify --all-tenants",
                    "n": total,
                    "ours_s": round(seconds, 3),
                    "baseline": f"target {target.get(size, '-')}",
                    "peak_rss_mb": round(rss / 1024, 1),
                }
            )
            print(
                f"{kind:10} {'verify --all-tenants (all identical)':42} {total:>6} {seconds:>9.3f} "
                f"{'':>9} {'':>8} target {target.get(size, '-'):20} {rss / 1024:>7.1f} MB",
                flush=True,
            )
        drifted = made[: args.verify_drifted]
        for i, tenant in enumerate(drifted):  # each one its own catalog: one comparison each
            statement = f"ALTER TABLE docbasket ADD COLUMN extra_{i} VARCHAR(10)"
            if kind == "sqlite":
                with sqlite3.connect(backend.path(tenant)) as db:
                    db.execute(statement)
                db.close()
            else:
                with psycopg.connect(backend._dsn(backend.url), autocommit=True) as conn:
                    conn.execute(f'SET search_path TO "{backend.schema(tenant)}"; {statement}')
        seconds, rss = backend.tool("verify", "--all-tenants", "--json", expect=1)
        rows.append(
            {
                "backend": kind,
                "metric": f"verify, {len(drifted)} distinct drifted",
                "n": len(made) + 1,
                "ours_s": round(seconds, 3),
                "baseline": "",
                "peak_rss_mb": round(rss / 1024, 1),
            }
        )
        print(
            f"{kind:10} {f'verify --all-tenants ({len(drifted)} drifted, distinct)':42} {len(made) + 1:>6} "
            f"{seconds:>9.3f} {'':>9} {'':>8} {'':27} {rss / 1024:>7.1f} MB",
            flush=True,
        )
    finally:
        backend.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--fleet", default="10000", help='the fleet suite\'s tenants (benchmarks/fleet.py --n); "" skips it')
    parser.add_argument("--naive-sample", type=int, default=10, help="0 skips the naive loop")
    parser.add_argument("--jobs", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=3, help="upgrade figures are the median of this many runs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--suite",
        choices=["migrate", "verify", "fleet", "all"],
        default="all",
        help="migrate: provision and upgrade; verify: verify over real fleets, clean and drifted; "
        "fleet: benchmarks/fleet.py (ensure_tenant, provision, no-op, status, verify on a fleet of real tenants "
        "against the empty database and plain SQL)",
    )
    parser.add_argument("--verify-fleet", default="1000", help="PostgreSQL fleet sizes for verify")
    parser.add_argument("--verify-fleet-sqlite", default="1000", help="SQLite fleet sizes for verify")
    parser.add_argument("--verify-drifted", type=int, default=20, help="tenants then drifted, each differently")
    args = parser.parse_args()
    args.verify_fleet = [int(x) for x in args.verify_fleet.split(",") if x]
    args.verify_fleet_sqlite = [int(x) for x in args.verify_fleet_sqlite.split(",") if x]
    args.jobs = [int(x) for x in args.jobs.split(",") if x]
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'backend':10} {'metric':42} {'N':>6} {'ours s':>9} {'base s':>9} {'ratio':>8} baseline")
    rows: list[dict] = []
    for kind in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        if args.suite in ("migrate", "all"):
            run_backend(kind, args, rows)
        if args.suite in ("verify", "all"):
            run_verify(kind, args, rows)
    if args.suite in ("fleet", "all") and args.fleet:
        import fleet  # benchmarks/fleet.py, beside this file

        fleet.main(["--backend", args.backend, "--n", str(args.fleet), "--repeat", str(args.repeat)])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

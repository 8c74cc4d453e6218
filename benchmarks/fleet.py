"""docex-migrate on fleets of real tenants (issue 22): each figure next to the empty database
and the plain-SQL floor, all measured in the same run.

    python benchmarks/fleet.py [--backend sqlite|postgresql|both] [--n 10000] [--repeat 3]
                               [--calls 50] [--new 20] [--provision 100] [--verify-repeat 1]
                               [--fleet-database DATABASE] [--keep] [--json out.json]

Two sites per backend, side by side: an *empty* database (one tenant, provisioned by
docex-migrate) and a *fleet* of N real tenants at head: the same tenant, every table, index and
key of the head schema, cloned quickly without docex-migrate (PostgreSQL: the provisioned
tenant's `pg_dump -s -n` replayed per schema with its name replaced, ten tenants per
transaction, then its version row; SQLite: the provisioned file copied). Every repeat measures
each figure on the empty site, on the fleet and its floor in turn, so load on the machine hits
all three alike; the figures are medians.

Floors (plain SQL, no docex-migrate):
- version read: one `SELECT version_num` of the tenant's version table, per call, on an open
  session (SQLite: open the file, read, close);
- raw DDL: the head schema's DDL and the version row for a new tenant, one transaction (one
  round trip on PostgreSQL, the dump as one simple query) per tenant, on an open session;
- plain read of all version rows: a Python process that connects and reads every tenant's
  version (PostgreSQL: the tenant schemas listed, then 500 tenants per `UNION ALL`; SQLite:
  each file opened, read, closed), the whole process timed as docex-migrate's commands are.

docex-migrate's figures: `api.ensure_tenant` timed per call in one Python process that calls
it many times (the first call, which imports and connects, is left out); `provision`,
`upgrade --all-tenants`, `status --json` and `verify --all-tenants` as whole commands.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

BIN = Path(sys.executable).parent
TEMPLATE = "benchtpl"  # the tenant provisioned by docex-migrate and cloned into the fleet
CLONES_PER_TRANSACTION = 10  # each creation takes locks from the server's shared lock table

# Times api.ensure_tenant per call, in one process, as an application calling it per request.
ENSURE = """
import json, sys, time
from docex_migrate import api
from docex_migrate.config import load_settings
settings = load_settings()
times = []
for tenant in sys.argv[1:]:
    started = time.perf_counter()
    api.ensure_tenant(tenant, settings)
    times.append(time.perf_counter() - started)
print(json.dumps(times))
"""
# The plain read of every tenant's version row, a whole process (as docex-migrate's commands are).
PLAIN_READ_PG = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    names = [r[0] for r in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\\\_%' ORDER BY nspname")]
    rows = 0
    for start in range(0, len(names), 500):
        sql = " UNION ALL ".join(
            f"SELECT '{n}' AS tenant, version_num FROM \\"{n}\\".alembic_version" for n in names[start:start + 500])
        rows += len(conn.execute(sql).fetchall())
print(rows)
"""
PLAIN_READ_SQLITE = """
import sqlite3
from pathlib import Path
rows = 0
for path in sorted(Path("storage").glob("tenant_*/docex.db")):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows += len(db.execute("SELECT version_num FROM alembic_version").fetchall())
    db.close()
print(rows)
"""


def ids(prefix: str, start: int, count: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(start, start + count)]


def server_url() -> str:
    return (
        os.environ.get("DOCEX_BENCH_DATABASE_URL")
        or os.environ.get("DOCEX_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def dsn(url: sa.URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Site:
    """One place tenants live (a PostgreSQL database or a SQLite storage folder), reachable both
    through docex-migrate and directly."""

    def __init__(self, kind: str, label: str, existing: str | None = None) -> None:
        self.kind, self.label = kind, label
        self.workdir = Path(tempfile.mkdtemp(prefix=f"docex_fleet_{kind}_{label}_"))
        self.env = {k: v for k, v in os.environ.items() if k not in ("DOCEX_CONFIG", "DOCEX_DATABASE_URL")}
        self.env["HOME"] = str(self.workdir)
        self.database: str | None = None
        self.tenants = 0
        if kind == "postgresql":
            self.server = sa.make_url(server_url())
            self.database = existing or f"docex_bench_{label}_{uuid.uuid4().hex[:8]}"
            if existing is None:
                with psycopg.connect(dsn(self.server), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{self.database}"')
            self.url = self.server.set(database=self.database)
            self.env["DOCEX_DATABASE_URL"] = dsn(self.url)
        self._conn: psycopg.Connection[Any] | None = None

    def close(self, keep: bool = False) -> None:
        if self._conn is not None:
            self._conn.close()
        if self.database and not keep:
            with psycopg.connect(dsn(self.server), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def drop_added(self) -> None:
        """Drop the tenants the suite added, so that a kept fleet is the same fleet next run."""
        names = [
            row[0]
            for row in self.conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%%' "
                "AND nspname !~ '^tenant_x[0-9]{5}$' AND nspname <> %s",
                (f"tenant_{TEMPLATE}",),
            )
        ]
        for start in range(0, len(names), 20):
            self.conn.execute("".join(f'DROP SCHEMA "{n}" CASCADE;' for n in names[start : start + 20]))

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            self._conn = psycopg.connect(dsn(self.url), autocommit=True)
        return self._conn

    def path(self, tenant: str) -> Path:
        return self.workdir / f"storage/tenant_{tenant}/docex.db"

    # --- docex-migrate, as a user or an application runs it --------------------------------
    def tool(self, *args: str, expect: int = 0) -> float:
        """Wall seconds of one docex-migrate command, interpreter start-up included."""
        started = time.perf_counter()
        done = subprocess.run([str(BIN / "docex-migrate"), *args], cwd=self.workdir, env=self.env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != expect:
            raise SystemExit(f"docex-migrate {' '.join(args[:3])} ... exited {done.returncode}: {done.stderr[-2000:]}")
        return seconds

    def python(self, script: str, *args: str) -> tuple[float, str]:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", script, *args], cwd=self.workdir, env=self.env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"benchmark helper failed: {done.stderr[-2000:]}")
        return seconds, done.stdout

    def ensure_tenant(self, tenants: list[str]) -> list[float]:
        """Seconds per api.ensure_tenant call after the first (imports, engine, chain)."""
        _, out = self.python(ENSURE, *tenants)
        return list(json.loads(out))[1:]

    # --- the floors ---------------------------------------------------------------------------
    def version_reads(self, tenants: list[str]) -> list[float]:
        times = []
        for tenant in tenants:
            started = time.perf_counter()
            if self.kind == "postgresql":
                self.conn.execute(f'SELECT version_num FROM "tenant_{tenant}".alembic_version').fetchall()
            else:
                db = sqlite3.connect(self.path(tenant))
                db.execute("SELECT version_num FROM alembic_version").fetchall()
                db.close()
            times.append(time.perf_counter() - started)
        return times

    def raw_ddl(self, tenants: list[str], ddl: str) -> list[float]:
        """Seconds per new tenant given the head DDL and its version row directly."""
        times = []
        for tenant in tenants:
            started = time.perf_counter()
            if self.kind == "postgresql":
                self.conn.execute(ddl.replace(f"tenant_{TEMPLATE}", f"tenant_{tenant}"))
            else:
                self.path(tenant).parent.mkdir(parents=True)
                db = sqlite3.connect(self.path(tenant), isolation_level=None)
                db.executescript(f"BEGIN; {ddl} COMMIT;")
                db.close()
            times.append(time.perf_counter() - started)
        self.tenants += len(tenants)
        return times

    def plain_read(self) -> float:
        """Seconds for a process to read every tenant's version row with plain SQL."""
        seconds, out = self.python(PLAIN_READ_PG if self.kind == "postgresql" else PLAIN_READ_SQLITE, *self._dsn_arg())
        if int(out) != self.tenants:
            print(f"# warning: the plain read saw {out.strip()} tenants, {self.tenants} expected", flush=True)
        return seconds

    def _dsn_arg(self) -> list[str]:
        return [dsn(self.url)] if self.kind == "postgresql" else []

    # --- the template's DDL and the fleet ----------------------------------------------------
    def head_ddl(self) -> str:
        """The provisioned template tenant's whole schema and version row, as one script whose
        every name is qualified by `tenant_<TEMPLATE>` (replaced per tenant)."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.path(TEMPLATE)) as db:
                rows = db.execute(
                    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type = 'index', rowid"
                ).fetchall()
                (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            db.close()
            return "".join(f"{r[0]};\n" for r in rows) + f"INSERT INTO alembic_version VALUES ('{version}');\n"
        dump = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "-n", f"tenant_{TEMPLATE}", dsn(self.url)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        skip = ("--", "\\", "SET ", "SELECT pg_catalog.set_config")
        body = "\n".join(line for line in dump.splitlines() if line.strip() and not line.startswith(skip))
        (version,) = self.conn.execute(f'SELECT version_num FROM "tenant_{TEMPLATE}".alembic_version').fetchone() or ("",)
        return f"{body}\nINSERT INTO tenant_{TEMPLATE}.alembic_version VALUES ('{version}');\n"

    def clone(self, tenants: list[str], ddl: str, sessions: int = 1) -> None:
        """Give each of ``tenants`` the template's schema and version row; PostgreSQL over
        ``sessions`` sessions at once (the catalog writes are the server's CPU)."""
        if self.kind == "sqlite":
            for tenant in tenants:
                self.path(tenant).parent.mkdir(parents=True)
                shutil.copyfile(self.path(TEMPLATE), self.path(tenant))
            self.tenants += len(tenants)
            return

        def build(share: list[str]) -> None:
            with psycopg.connect(dsn(self.url), autocommit=True) as conn:
                for start in range(0, len(share), CLONES_PER_TRANSACTION):
                    batch = share[start : start + CLONES_PER_TRANSACTION]
                    conn.execute("".join(ddl.replace(f"tenant_{TEMPLATE}", f"tenant_{t}") for t in batch))

        with ThreadPoolExecutor(sessions) as pool:
            for done in [pool.submit(build, tenants[i::sessions]) for i in range(sessions)]:
                done.result()
        self.tenants += len(tenants)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self, kind: str, what: str, unit: str, empty: float | None, fleet: float, floor: float | None, floor_name: str
    ) -> None:
        row = {
            "backend": kind,
            "what": what,
            "unit": unit,
            "empty": empty,
            "fleet": fleet,
            "floor": floor,
            "floor_name": floor_name,
            "fleet_over_empty": round(fleet / empty, 2) if empty else None,
            "fleet_over_floor": round(fleet / floor, 2) if floor else None,
        }
        self.rows.append(row)

        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}" if unit == "ms" else f"{value:.2f}"

        ratios = f"{row['fleet_over_empty'] or '-':>6} {row['fleet_over_floor'] or '-':>6}"
        print(f"{kind:10} {what:44} {unit:3} {fmt(empty):>9} {fmt(fleet):>9} {fmt(floor):>9} {ratios}  {floor_name}", flush=True)


def run(kind: str, args: argparse.Namespace, report: Report) -> None:
    existing_db = args.fleet_database if kind == "postgresql" else None
    empty, fleet = Site(kind, "empty"), Site(kind, "fleet", existing=existing_db)
    print(f"# {kind}: empty {empty.database or empty.workdir}, fleet {fleet.database or fleet.workdir}", flush=True)
    try:
        empty.tool("provision", TEMPLATE)
        empty.tenants += 1
        if existing_db:
            fleet.tenants = args.n
            ddl = fleet.head_ddl()
            print(f"# {kind}: {args.n} real tenants used as they are in {existing_db}", flush=True)
        else:
            fleet.tool("provision", TEMPLATE)
            fleet.tenants += 1
            ddl = fleet.head_ddl()
            started = time.perf_counter()
            fleet.clone(ids("x", 1, args.n - 1), ddl, args.build_sessions)
            print(f"# {kind}: {args.n} real tenants made in {time.perf_counter() - started:.1f} s", flush=True)

        existing: dict[str, list[float]] = {"empty": [], "fleet": [], "floor": []}
        new: dict[str, list[float]] = {"empty": [], "fleet": [], "floor": [], "floor_empty": []}
        provision: dict[str, list[float]] = {"empty": [], "fleet": [], "floor": [], "floor_empty": []}
        noop: dict[str, list[float]] = {"empty": [], "fleet": [], "floor": []}
        status: dict[str, list[float]] = {"empty": [], "fleet": []}
        verify: dict[str, list[float]] = {"empty": [], "fleet": []}
        k, p = args.new, args.provision
        for r in range(args.repeat):
            # ensure_tenant of an existing tenant: distinct fleet tenants per call, spread out.
            picks = [f"x{1 + (i * 7919 + r * 104729) % (args.n - 1):05d}" for i in range(args.calls)]
            existing["empty"] += empty.ensure_tenant([TEMPLATE] * (args.calls + 1))
            existing["fleet"] += fleet.ensure_tenant([picks[0], *picks])
            existing["floor"] += fleet.version_reads(picks)
            # ensure_tenant of a new tenant, against the raw DDL of a new tenant.
            new["empty"] += empty.ensure_tenant(ids(f"e{r}n", 0, k + 1))
            new["fleet"] += fleet.ensure_tenant(ids(f"e{r}n", 0, k + 1))
            new["floor"] += fleet.raw_ddl(ids(f"r{r}n", 0, k), ddl)
            new["floor_empty"] += empty.raw_ddl(ids(f"r{r}n", 0, k), ddl)
            for site in (empty, fleet):
                site.tenants += k + 1
            # provision of P new tenants in one command, per tenant, against P raw DDLs.
            for label, site in (("empty", empty), ("fleet", fleet)):
                provision[label].append(site.tool("provision", *ids(f"p{r}n", 0, p)) / p)
                site.tenants += p
            provision["floor"].append(sum(fleet.raw_ddl(ids(f"q{r}n", 0, p), ddl)) / p)
            provision["floor_empty"].append(sum(empty.raw_ddl(ids(f"q{r}n", 0, p), ddl)) / p)
            # the bulk reads: no-op upgrade, status, verify; against the plain read of every version.
            for label, site in (("empty", empty), ("fleet", fleet)):
                noop[label].append(site.tool("upgrade", "--all-tenants"))
                status[label].append(site.tool("status", "--json"))
            noop["floor"].append(fleet.plain_read())
            if r < args.verify_repeat:
                for label, site in (("empty", empty), ("fleet", fleet)):
                    verify[label].append(site.tool("verify", "--all-tenants", "--json"))
            print(f"# {kind}: repeat {r + 1} of {args.repeat} done, fleet now {fleet.tenants} tenants", flush=True)

        n = fleet.tenants
        report.add(
            kind,
            f"ensure_tenant, existing tenant ({args.calls} calls)",
            "ms",
            median_ms(existing["empty"]),
            median_ms(existing["fleet"]),
            median_ms(existing["floor"]),
            "one version read",
        )
        report.add(
            kind,
            f"ensure_tenant, new tenant ({k} calls)",
            "ms",
            median_ms(new["empty"]),
            median_ms(new["fleet"]),
            median_ms(new["floor"]),
            f"raw DDL (empty db: {median_ms(new['floor_empty']):.1f} ms)",
        )
        report.add(
            kind,
            f"provision {p} new tenants, one command, per tenant",
            "ms",
            median_ms(provision["empty"]),
            median_ms(provision["fleet"]),
            median_ms(provision["floor"]),
            f"raw DDL (empty db: {median_ms(provision['floor_empty']):.1f} ms)",
        )
        report.add(
            kind,
            "no-op upgrade --all-tenants",
            "s",
            statistics.median(noop["empty"]),
            statistics.median(noop["fleet"]),
            statistics.median(noop["floor"]),
            "plain read of all versions",
        )
        report.add(
            kind,
            "status --json",
            "s",
            statistics.median(status["empty"]),
            statistics.median(status["fleet"]),
            statistics.median(noop["floor"]),
            "plain read of all versions",
        )
        if verify["fleet"]:
            report.add(
                kind,
                "verify --all-tenants (no drift)",
                "s",
                statistics.median(verify["empty"]),
                statistics.median(verify["fleet"]),
                None,
                "target < 15 s",
            )
        print(f"# {kind}: fleet ended with {n} tenants (bulk reads saw {args.n} to {n})", flush=True)
        if args.keep and kind == "postgresql":
            fleet.drop_added()
    finally:
        empty.close(args.keep)
        fleet.close(args.keep)


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value}×"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | what | empty database | fleet | floor at fleet | fleet / empty | fleet / floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        unit = row["unit"]

        def fmt(value: float | None, unit: str = unit) -> str:
            return "—" if value is None else f"{value:.1f} ms" if unit == "ms" else f"{value:.2f} s"

        lines.append(
            f"| {row['backend']} | {row['what']} | {fmt(row['empty'])} | {fmt(row['fleet'])} | "
            f"{row['floor_name'] + ': ' + fmt(row['floor']) if row['floor'] else row['floor_name']} | "
            f"{ratio(row['fleet_over_empty'])} | {ratio(row['fleet_over_floor'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--n", type=int, default=10000, help="tenants in the fleet before the suite adds its own")
    parser.add_argument("--repeat", type=int, default=3, help="each figure is the median over this many rounds")
    parser.add_argument("--calls", type=int, default=50, help="ensure_tenant calls on existing tenants per round")
    parser.add_argument("--new", type=int, default=20, help="ensure_tenant calls on new tenants per round")
    parser.add_argument("--provision", type=int, default=100, help="new tenants per provision command")
    parser.add_argument("--verify-repeat", type=int, default=1, help="rounds that also run verify (0 skips it)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--fleet-database",
        metavar="DATABASE",
        help="PostgreSQL: measure on this database as it is (a fleet of --n tenants an earlier run built and kept "
        "with --keep); it is dropped at the end unless --keep",
    )
    parser.add_argument("--build-sessions", type=int, default=2, help="PostgreSQL sessions that build the fleet at once")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the databases and folders (default: dropped); a kept PostgreSQL fleet loses the tenants the suite added",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(
        f"# {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        flush=True,
    )
    print(f"{'backend':10} {'what':44} {'u':3} {'empty':>9} {'fleet':>9} {'floor':>9} {'f/e':>6} {'f/fl':>6}  floor")
    report = Report()
    for kind in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        run(kind, args, report)
    load = os.getloadavg()
    print(f"# load at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(markdown(report.rows))
    if args.json:
        args.json.write_text(json.dumps(report.rows, indent=2))


if __name__ == "__main__":
    main()

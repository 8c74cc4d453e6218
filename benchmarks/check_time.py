"""How long `docex-migrate check` takes on PostgreSQL (which now covers SQLite too), next to the
checks `check` ran before issue 23 on PostgreSQL alone, measured in the same run.

    python benchmarks/check_time.py [--repeat 3] [--breakdown]

Each figure is the median wall time of ``--repeat`` runs of a whole process (interpreter start-up
and imports included), with the CPU time of that process beside it: on a shared machine the wall
time moves with the load, the ratio between figures of one run much less. ``--breakdown`` adds
each check's own time per backend (in this process). PostgreSQL comes from
$DOCEX_BENCH_DATABASE_URL (else $DOCEX_TEST_DATABASE_URL, else the local server); the benchmark
creates its own database there and drops it at the end (``--database URL``: runs in that existing
database instead, whose scratch schemas `check` removes itself).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 15.0  # seconds, on PostgreSQL (issue 23)
# The checks `check` ran before issue 23 (on the configured backend only).
OLD_CHECKS = [
    "single-head",
    "no-schema-names",
    "offline-sql",
    "immutable-history",
    "shipped-snapshots",
    "upgrade-from-empty",
    "stepwise",
    "metadata-matches-head",
    "downgrade-leaves-no-trace",
    "mixed-fleet",
    "isolation",
    "fleet-at-head",
    "fleet-drift",
    "lint",
]
OLD_CHECK_ON_ONE_BACKEND = (
    "import sys; from docex_migrate import checks; from docex_migrate.config import load_settings; "
    "results = checks.run_checks(load_settings(), sys.argv[1:]); "
    "sys.exit(1 if any(r.status == 'failed' for r in results) else 0)"
)


def server_url() -> sa.URL:
    raw = os.environ.get("DOCEX_BENCH_DATABASE_URL") or os.environ.get("DOCEX_TEST_DATABASE_URL")
    return sa.make_url(raw or "postgresql://postgres@127.0.0.1:5432/postgres").set(drivername="postgresql+psycopg")


def timed(args: list[str], environ: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one process, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, env=environ, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:3])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def breakdown(url: str, cwd: str) -> None:
    """Each check's own time, per backend, in this process."""
    os.chdir(cwd)
    sys.path.insert(0, str(ROOT))
    from docex_migrate import checks
    from docex_migrate.config import load_settings

    for label, database_url in (("postgresql", url), ("sqlite", None)):
        if database_url:
            os.environ["DOCEX_DATABASE_URL"] = database_url
        else:
            os.environ.pop("DOCEX_DATABASE_URL", None)
        settings = load_settings()
        for name in checks.NAMES:
            start = time.perf_counter()
            (result,) = checks.run_checks(settings, [name])
            print(f"  {label:10} {name:26} {time.perf_counter() - start:6.2f} s  {result.status.value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true", help="each check's time per backend, too")
    parser.add_argument("--database", metavar="URL", help="an existing database to run in (not created, not dropped)")
    options = parser.parse_args()

    server = sa.make_url(options.database) if options.database else server_url()
    database = server.database if options.database else f"docex_migrate_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    if not options.database:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
    url = server.set(database=database).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory(prefix="docex_migrate_bench_") as cwd:
            environ = {k: v for k, v in os.environ.items() if k != "DOCEX_CONFIG"}
            environ |= {"DOCEX_DATABASE_URL": url, "HOME": cwd, "PYTHONPATH": str(ROOT)}
            cli = [sys.executable, "-m", "docex_migrate", "check"]
            old = [sys.executable, "-c", OLD_CHECK_ON_ONE_BACKEND, *OLD_CHECKS]
            runs: dict[str, list[tuple[float, float]]] = {"new": [], "old": []}
            for _ in range(options.repeat):  # interleaved, so that both see the same load
                runs["old"].append(timed(old, environ, cwd))
                runs["new"].append(timed(cli, environ, cwd))
            new, before = median(runs["new"]), median(runs["old"])
            print(f"check on PostgreSQL, {options.repeat} run(s), median (wall / CPU):")
            print(f"  before issue 23 (14 checks, PostgreSQL only): {before[0]:6.2f} s / {before[1]:5.2f} s CPU")
            print(f"  docex-migrate check (17 checks, PostgreSQL and SQLite): {new[0]:6.2f} s / {new[1]:5.2f} s CPU")
            print(f"  ratio: {new[0] / before[0]:.2f}x wall, {new[1] / before[1]:.2f}x CPU; budget {BUDGET:.0f} s wall")
            if options.breakdown:
                print("each check on its own (in-process, wall):")
                breakdown(url, cwd)
    finally:
        if not options.database:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()
    return 0 if new[0] < BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())

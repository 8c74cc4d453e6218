"""What the run ledger costs a fleet upgrade: the same 1,000-tenant upgrade with and without it.

    python benchmarks/ledger_cost.py [--backend sqlite|postgresql|both] [--n 1000] [--rounds 5]

The tenants are on the small test chain (tests/chains/steps: two cheap steps to upgrade), so
the migration itself is as cheap as a migration gets and the ledger's share is as large as it
gets. Each round upgrades every tenant r1 -> r3 through the Python API, once without a ledger
and once recording the run (the run row, a row per tenant at the plan, one update per tenant as
it finishes, the end), then downgrades them again (not timed). Rounds alternate the order, and
the figures are medians over the rounds. PostgreSQL comes from
$DOCEX_BENCH_DATABASE_URL (else $DOCEX_TEST_DATABASE_URL, else the local server); the benchmark
creates its own database there and drops it at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
import yaml
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
os.environ["DOCEX_MIGRATE_SCRIPT_LOCATION"] = str(ROOT / "tests" / "chains" / "steps")

from docex_migrate import api  # noqa: E402 - after the chain is chosen
from docex_migrate.config import load_settings  # noqa: E402


class TimedRun(api.Run):
    """A run that adds up the time spent in its own recording, as a direct figure next to the
    with/without difference, which a shared machine makes noisy: the migrating thread's time in
    the plan, each result and the end, plus the CPU time of the writer thread (which writes the
    results and heartbeats; its waits are not a cost)."""

    spent = 0.0
    writer_cpu = 0.0

    def _write_results(self) -> None:
        started = time.thread_time()
        try:
            super()._write_results()
        finally:
            TimedRun.writer_cpu += time.thread_time() - started

    def planned(self, *args, **kwargs) -> None:
        started = time.perf_counter()
        super().planned(*args, **kwargs)
        TimedRun.spent += time.perf_counter() - started

    def on_result(self, result) -> None:
        started = time.perf_counter()
        super().on_result(result)
        TimedRun.spent += time.perf_counter() - started

    def close(self, *args, **kwargs) -> None:
        started = time.perf_counter()
        super().close(*args, **kwargs)
        TimedRun.spent += time.perf_counter() - started


def settings_for(kind: str, workdir: Path, url: sa.URL | None):
    if kind == "sqlite":
        data: dict = {"database": {"type": "sqlite", "sqlite": {"path_template": "storage/tenant_{tenant_id}/docex.db"}}}
    else:
        assert url is not None
        data = {
            "database": {
                "type": "postgres",
                "postgres": {
                    "host": url.host,
                    "port": url.port or 5432,
                    "database": url.database,
                    "user": url.username,
                    "password": url.password or "",
                    "schema_template": "tenant_{tenant_id}",
                },
            }
        }
    data["security"] = {"multi_tenancy_model": "database_level", "tenant_database_routing": True}
    config = workdir / "docex.yaml"
    config.write_text(yaml.safe_dump(data))
    return load_settings(config)


def measure(kind: str, n: int, rounds: int, url: sa.URL | None) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix=f"docex_ledger_bench_{kind}_"))
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        settings = settings_for(kind, workdir, url)
        tenants = [f"b{i:05d}" for i in range(n)]
        api.provision(settings, tenants)
        api.downgrade(settings, None, "r1")
        seen: dict[str, list[float]] = {"without": [], "with": [], "recording": []}
        for round_ in range(rounds):
            for variant in ("without", "with") if round_ % 2 == 0 else ("with", "without"):
                run = TimedRun(settings, "upgrade") if variant == "with" else None
                TimedRun.spent = TimedRun.writer_cpu = 0.0
                started = time.perf_counter()
                results = api.upgrade(settings, None, "r3", run=run)
                seconds = time.perf_counter() - started
                assert all(r.action.value == "upgraded" for r in results), {r.action for r in results}
                seen[variant].append(seconds)
                spent = ""
                if run is not None:
                    seen["recording"].append(TimedRun.spent + TimedRun.writer_cpu)
                    spent = f" (recording: {TimedRun.spent:.3f} s + writer thread CPU {TimedRun.writer_cpu:.3f} s)"
                print(f"{kind:10} round {round_} {variant:7} ledger: {seconds:7.2f} s{spent}", flush=True)
                api.downgrade(settings, None, "r1")
        return {k: statistics.median(v) for k, v in seen.items()}
    finally:
        os.chdir(cwd)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = {}
    if args.backend in ("sqlite", "both"):
        figures["sqlite"] = measure("sqlite", args.n, args.rounds, None)
    if args.backend in ("postgresql", "both"):
        server = sa.make_url(
            os.environ.get("DOCEX_BENCH_DATABASE_URL")
            or os.environ.get("DOCEX_TEST_DATABASE_URL")
            or "postgresql://postgres@127.0.0.1:5432/postgres"
        ).set(drivername="postgresql+psycopg")
        name = f"docex_ledger_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            figures["postgresql"] = measure("postgresql", args.n, args.rounds, server.set(database=name))
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
    print(
        "\n| backend | tenants | upgrade without ledger | with ledger | difference | recording, measured directly | its share |"
        "\n|---|---|---|---|---|---|---|"
    )
    for kind, best in figures.items():
        share = (best["with"] - best["without"]) / best["without"] * 100
        own = best["recording"] / best["with"] * 100
        print(
            f"| {kind} | {args.n} | {best['without']:.2f} s | {best['with']:.2f} s | {share:+.1f}% "
            f"| {best['recording']:.3f} s | {own:.1f}% |"
        )


if __name__ == "__main__":
    main()

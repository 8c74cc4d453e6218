"""The command line's shared options (typer's Annotated types), and the checks on what was
passed that typer cannot make itself: each refused with one line, exit 2 (UsageError)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from .config import MAX_TIMEOUT_SECONDS, Settings
from .errors import UsageError

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="DocEX config file (default: $DOCEX_CONFIG, ~/.docex/config.yaml, built-in SQLite)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout; human text goes to stderr.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log each migration step; show tracebacks.")]
TenantOpt = Annotated[list[str] | None, typer.Option("--tenant", "-t", help="A tenant id (repeatable).")]
AllOpt = Annotated[bool, typer.Option("--all-tenants", help="Every tenant found in the database.")]
FailFastOpt = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failing tenant.")]
MaxFailuresOpt = Annotated[
    int | None, typer.Option("--max-failures", min=1, help="Stop after N failing tenants (default: never stop).")
]
# Timeouts are checked by config.Timeouts, not by typer's min/max: one line, exit 2, like any bad input.
_TIMEOUT_RANGE = f"0 = no limit; at most {MAX_TIMEOUT_SECONDS}, about 24 days"
LockTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--lock-timeout", help=f"Seconds a step may wait for a lock the application holds (default 10; {_TIMEOUT_RANGE})."
    ),
]
StatementTimeoutOpt = Annotated[
    float | None,
    typer.Option("--statement-timeout", help=f"Seconds one PostgreSQL statement may run (default 900; {_TIMEOUT_RANGE})."),
]
JobsOpt = Annotated[
    int,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        help="Tenants migrated in parallel, one process each: this one and N-1 workers (capped by the free connections).",
    ),
]
ShardOpt = Annotated[
    str | None, typer.Option("--shard", help="Only shard K of N (K/N, 0 <= K < N), by a stable hash of the tenant id.")
]
PlanOpt = Annotated[
    bool,
    typer.Option(
        "--plan",
        help="Print what the command would do, tenant by tenant (from -> to, wave, what is skipped and why), "
        "and change nothing: no run recorded, no prompt.",
    ),
]
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume",
        metavar="RUN",
        help="Take the tenants of recorded run RUN that did not reach its target there, as a new run "
        "(upgrade: in RUN's waves, unless --canary/--waves are given).",
    ),
]
TenantLockWaitOpt = Annotated[
    float | None,
    typer.Option(
        "--tenant-lock-wait", help=f"Seconds to wait for another run on the same tenant (default 300; {_TIMEOUT_RANGE})."
    ),
]

# upgrade's own: adoption, verification, staged rollouts, SQL for review
AdoptFirstOpt = Annotated[
    bool, typer.Option("--adopt", help="Adopt tenants DocEX created itself (unversioned) first, then upgrade them.")
]
VerifyFirstOpt = Annotated[
    bool, typer.Option("--verify-first", help="Refuse tenants whose catalog is not exactly their revision (see verify).")
]
CanaryOpt = Annotated[
    list[str] | None, typer.Option("--canary", help="Migrate this tenant first (repeatable); stop if a canary fails.")
]
WavesOpt = Annotated[
    str | None,
    typer.Option("--waves", help="Then go in waves of these cumulative sizes, counts or percentages: e.g. 10,100,25%,100%."),
]
PauseOpt = Annotated[
    float | None,
    typer.Option(
        "--pause-between-waves",
        min=0,
        max=MAX_TIMEOUT_SECONDS,  # time.sleep() overflows on inf, after the first wave
        help="Seconds to wait between the canaries and each wave (with --resume: instead of the run's).  [default: 0]",
        show_default=False,
    ),
]
SqlOpt = Annotated[bool, typer.Option("--sql", help="Write each tenant's script for review into --output instead of running it.")]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", help="Where --sql writes the scripts.  [default: migration-sql]", show_default=False),
]


def targets(tenant: list[str] | None, all_tenants: bool) -> list[str] | None:
    if tenant and all_tenants:
        raise UsageError("naming tenants and --all-tenants exclude each other: pass one")
    if not tenant and not all_tenants:
        raise UsageError("name the tenants (--tenant ID, repeatable) or pass --all-tenants")
    return None if all_tenants else tenant


def shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    index, _, count = value.partition("/")
    ascii_digits = re.compile("[0-9]+")  # not str.isdigit(): it takes ٣, ３ and ², which int() reads or refuses
    if not (ascii_digits.fullmatch(index) and ascii_digits.fullmatch(count) and int(index) < int(count)):
        raise UsageError(f"--shard {value!r}: use K/N with 0 <= K < N, e.g. --shard 0/4")
    return int(index), int(count)


def refuse_with_sql(given: dict[str, bool]) -> None:
    """upgrade --sql writes scripts and runs nothing: options about running tenants cannot apply."""
    passed = [option for option, was_given in given.items() if was_given]
    if passed:
        them = "them" if len(passed) > 1 else "it"
        raise UsageError(
            f"--sql writes scripts and runs nothing, so it cannot take {', '.join(passed)}: drop {them}, or drop --sql"
        )


def stop_after(fail_fast: bool, max_failures: int | None) -> int | None:
    if fail_fast and max_failures is not None:
        raise UsageError("--fail-fast and --max-failures exclude each other: pass one")
    return 1 if fail_fast else max_failures


DEFAULT_BACKUP_DIR = Path("backups")


def backup_dir(no_backup: bool, given: str | None) -> Path | None:
    """Where deprovision writes its backup (None: no backup). A directory named together with
    --no-backup is refused rather than ignored: the operator expected a backup there, and the
    tenant would be dropped without one."""
    if no_backup and given is not None:
        raise UsageError(f"--no-backup and --backup-dir {given!r} exclude each other: drop --no-backup to keep a backup")
    if given is not None and not given.strip():
        raise UsageError("--backup-dir is empty: name the directory the backup goes to (default: ./backups)")
    return None if no_backup else Path(given) if given is not None else DEFAULT_BACKUP_DIR


def with_timeouts(settings: Settings, lock: float | None, statement: float | None, wait: float | None) -> Settings:
    named = {"lock_timeout": lock, "statement_timeout": statement, "tenant_lock_wait": wait}
    given: dict[str, float] = {k: v for k, v in named.items() if v is not None}
    return replace(settings, timeouts=replace(settings.timeouts, **given)) if given else settings


def selection(tenant: list[str] | None, all_tenants: bool, shard: str | None, revision: str | None = None) -> str:
    parts = [revision] if revision else []
    parts += ["--all-tenants"] if all_tenants else [f"--tenant {t}" for t in tenant or []]
    return " ".join(parts + ([f"--shard {shard}"] if shard else []))


def adopt_arguments(targets: list[str] | None, dry_run: bool) -> list[str]:
    """adopt's own arguments again (its tenants are arguments, not --tenant)."""
    return ["adopt", *(["--dry-run"] if dry_run else []), *(["--all-tenants"] if targets is None else targets)]


def resume_alone(resume: str | None, *given: object) -> None:
    if resume is not None and any(g not in (None, False, []) for g in given):
        raise UsageError("--resume takes the tenants and the target of the run it resumes: pass no revision, tenants or --shard")


def before_the_command(ctx: typer.Context, config: Path | None, json: bool, verbose: bool) -> None:
    """The common options given before the command (`docex-migrate --config X status`, where Alembic
    users put `-c`) become the defaults of every command below: the same option given after the
    command still wins, as it is nearer to what it configures."""
    given: dict[str, Any] = {"config": str(config) if config else None, "json": json or None, "verbose": verbose or None}
    defaults = {name: value for name, value in given.items() if value is not None}
    if defaults:
        ctx.default_map = {**(ctx.default_map or {}), **_for_every_command(ctx.command, defaults)}


def _for_every_command(command: object, defaults: dict[str, Any]) -> dict[str, Any]:
    # click looks a command's defaults up under its name in its parent's map, group by group (runs show).
    below: dict[str, object] = getattr(command, "commands", {})
    return {**defaults, **{name: _for_every_command(sub, defaults) for name, sub in below.items()}}

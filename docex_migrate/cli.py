"""The command line: parse, call one function of api.py, hand its result to reporting.py, and
map the outcome to an exit code. It imports nothing that does the work.

The cli_* modules are the only ones that import typer: cli_options.py (the options and the checks
typer cannot make), cli_running.py (how each command runs: errors, signals, prompts),
cli_authoring.py (the revision author's commands, registered here). Exit codes: 0 done, 1
some tenant failed, 2 bad usage, input, configuration or connection; 130 / 143 stopped by
SIGINT / SIGTERM, after printing what was done (the tenant in flight rolled back, the rest not
run; --json: the one report, ``interrupted`` set). A signal that arrives once the command's
last change has committed (restore, verify --repair, adopt, deprovision) stops nothing: the
command records and prints its result, exits with its own code, and says on stderr that the
signal came too late (interrupts.py). An exit-1 failure with --json prints the report too; a
refusal (exit 2) prints no JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import api, interrupts
from . import cli_options as opt
from . import cli_running as running
from .advice import command
from .chain import load_chain
from .cli_authoring import check, heads, history, revision
from .cli_options import (
    AdoptFirstOpt,
    AllOpt,
    CanaryOpt,
    ConfigOpt,
    FailFastOpt,
    JobsOpt,
    JsonOpt,
    LockTimeoutOpt,
    MaxFailuresOpt,
    OutputOpt,
    PauseOpt,
    PlanOpt,
    ResumeOpt,
    ShardOpt,
    SqlOpt,
    StatementTimeoutOpt,
    TenantLockWaitOpt,
    TenantOpt,
    VerboseOpt,
    VerifyFirstOpt,
    WavesOpt,
)
from .config import config_path, enable_multi_tenancy, load_settings
from .errors import EXIT_FAILED, DocexMigrateError, Interrupted, UsageError
from .reporting import Reporter
from .restore_advice import restore_command
from .results import Action, CommandReport
from .streams import forgive_closed_pipes, lost_output
from .tempdirs import sweep_abandoned

app = typer.Typer(
    help="Evolve the DocEX tenant schema: one Alembic revision chain, applied to every tenant "
    "(a PostgreSQL schema or a SQLite file per tenant).\n\n--config, --json and --verbose go before the command "
    "or after it; given in both places, the one after the command wins.",
    no_args_is_help=True,
    rich_markup_mode=None,  # a docstring's single line breaks are not meant for the terminal
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(api.version())
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and the chain's head.")
    ] = False,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Evolve the DocEX tenant schema: one Alembic revision chain, applied to every tenant
    (a PostgreSQL schema or a SQLite file per tenant)."""
    opt.before_the_command(ctx, config, json, verbose)
    sweep_abandoned()


@app.command()
def provision(
    tenants: Annotated[list[str], typer.Argument(help="Tenant ids, e.g. acme-corp.", show_default=False)],
    verify: Annotated[bool, typer.Option("--verify", help="Prove each tenant works (write, read, roll back).")] = False,
    enable_multi_tenancy_: Annotated[
        bool, typer.Option("--enable-multi-tenancy", help="First write database-level multi-tenancy into the config file.")
    ] = False,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="An existing tenant is brought to head, not an error.")] = False,
    jobs: JobsOpt = 1,
    plan: PlanOpt = False,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Create tenant namespaces and upgrade them to head."""
    with running.guard(verbose):
        settings = load_settings(config)
        api.check_tenant_ids(settings, tenants)  # refuse bad ids before the config file is touched
        reporter = Reporter(json)
        report = CommandReport("provision", [], target=api.target_of(settings, "provision", "head"), plan=plan)
        if plan and enable_multi_tenancy_:
            raise UsageError("--plan changes nothing, the config file included: drop --enable-multi-tenancy")
        if enable_multi_tenancy_:
            written = enable_multi_tenancy(config_path(config))
            reporter.say(f"database-level multi-tenancy enabled in {written}")
            settings = load_settings(written)
        run = None if plan else running.new_run(settings, "provision", " ".join(tenants))
        running.report(
            reporter,
            report,
            lambda: api.provision(settings, tenants, verify=verify, exist_ok=exist_ok, jobs=jobs, run=run, plan=plan),
            run,
        )


@app.command()
def upgrade(
    revision: Annotated[
        str | None, typer.Argument(help="Target revision: head, an id or a unique prefix.  [default: head]", show_default=False)
    ] = None,
    tenant: TenantOpt = None,
    all_tenants: AllOpt = False,
    fail_fast: FailFastOpt = False,
    max_failures: MaxFailuresOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StatementTimeoutOpt = None,
    tenant_lock_wait: TenantLockWaitOpt = None,
    adopt_first: AdoptFirstOpt = False,
    jobs: JobsOpt = 1,
    shard: ShardOpt = None,
    verify_first: VerifyFirstOpt = False,
    canary: CanaryOpt = None,
    waves: WavesOpt = None,
    pause_between_waves: PauseOpt = None,
    sql: SqlOpt = False,
    output: OutputOpt = None,
    resume: ResumeOpt = None,
    plan: PlanOpt = False,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Bring tenants to REVISION (default head); tenants already there are skipped.

    Unversioned tenants (created by DocEX itself) are skipped as needing `adopt`, exit 1,
    unless --adopt adopts them first.

    A failing tenant does not stop the others (unless --fail-fast or --max-failures); each one
    is rolled back to the revision it had, and listed with the database's error.
    """
    with running.guard(verbose):
        if sql:
            opt.refuse_with_sql({
                "--resume": resume is not None,
                "--canary": bool(canary),
                "--waves": waves is not None,
                "--pause-between-waves": pause_between_waves not in (None, 0),
                "--adopt": adopt_first,
                "--verify-first": verify_first,
                "--jobs": jobs != 1,
                "--fail-fast": fail_fast,
                "--max-failures": max_failures is not None,
                "--plan": plan,
            })  # fmt: skip
        elif output is not None:
            raise UsageError("--output is where --sql writes its scripts: pass --sql too, or drop --output")
        opt.resume_alone(resume, revision, tenant, all_tenants, shard)
        targets = None if resume else opt.targets(tenant, all_tenants)
        stop = opt.stop_after(fail_fast, max_failures)
        settings = opt.with_timeouts(load_settings(config), lock_timeout, statement_timeout, tenant_lock_wait)
        reporter = Reporter(json)
        if sql:  # nothing is run, so nothing is recorded
            directory = output or Path("migration-sql")
            written = api.upgrade_sql(settings, targets, revision or "head", directory, shard=opt.shard(shard))
            target = api.target_of(settings, "upgrade", revision or "head")
            running.finish(reporter, CommandReport("upgrade", written.results, target=target))
            if written.combined is not None:
                reporter.say(f"every tenant's script in one, in order: {written.combined}")
            return
        target = api.target_of(settings, "upgrade", revision or "head", resume=resume)
        report = CommandReport("upgrade", [], target=target, plan=plan, resumes=resume)
        run = None if plan else running.new_run(settings, "upgrade", opt.selection(tenant, all_tenants, shard, revision))
        running.report(
            reporter,
            report,
            lambda: running.resumed(
                reporter,
                resume,
                api.upgrade(
                    settings,
                    targets,
                    revision or "head",
                    max_failures=stop,
                    adopt_first=adopt_first,
                    verify_first=verify_first,
                    canary=canary or (),
                    waves=waves,
                    pause_between_waves=pause_between_waves,
                    jobs=jobs,
                    shard=opt.shard(shard),
                    run=run,
                    resume=resume,
                    plan=plan,
                ),
            ),
            run,
        )


@app.command()
def downgrade(
    revision: Annotated[
        str | None, typer.Argument(help="Target revision: an id, a unique prefix, or base.", show_default=False)
    ] = None,
    tenant: TenantOpt = None,
    all_tenants: AllOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    fail_fast: FailFastOpt = False,
    max_failures: MaxFailuresOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StatementTimeoutOpt = None,
    tenant_lock_wait: TenantLockWaitOpt = None,
    jobs: JobsOpt = 1,
    shard: ShardOpt = None,
    resume: ResumeOpt = None,
    plan: PlanOpt = False,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Take tenants back to REVISION; asks for confirmation unless --yes (or --plan, which changes nothing)."""
    with running.guard(verbose):
        opt.resume_alone(resume, revision, tenant, all_tenants, shard)
        if revision is None and resume is None:
            raise UsageError("name the revision to go back to (an id, a unique prefix, or base), or --resume RUN")
        targets = None if resume else opt.targets(tenant, all_tenants)
        stop = opt.stop_after(fail_fast, max_failures)
        settings = opt.with_timeouts(load_settings(config), lock_timeout, statement_timeout, tenant_lock_wait)
        # an unknown revision, or a run that cannot be resumed, is refused before asking
        target = api.target_of(settings, "downgrade", revision or "base", resume=resume)
        report = CommandReport("downgrade", [], target=target, plan=plan, resumes=resume)
        reporter = Reporter(json)
        question = ""
        if not (yes or plan) and running.on_a_terminal():  # the prompt names what the plan moves, read before anything changes
            planned = api.downgrade(settings, targets, revision or "base", shard=opt.shard(shard), resume=resume, plan=True)
            moving = [r for r in planned if r.action == Action.WOULD_DOWNGRADE]
            question = f"Downgrade {running.tenants(len(moving))}{running.counted(r.from_revision for r in moving)} to {target}?"
        running.confirm(yes or plan, "downgrade", question)
        run = None if plan else running.new_run(settings, "downgrade", opt.selection(tenant, all_tenants, shard, revision))
        running.report(
            reporter,
            report,
            lambda: running.resumed(
                reporter,
                resume,
                api.downgrade(
                    settings,
                    targets,
                    revision or "base",
                    max_failures=stop,
                    jobs=jobs,
                    shard=opt.shard(shard),
                    run=run,
                    resume=resume,
                    plan=plan,
                ),
            ),
            run,
        )


@app.command()
def undo(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run to undo (see `docex-migrate runs`).", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StatementTimeoutOpt = None,
    tenant_lock_wait: TenantLockWaitOpt = None,
    jobs: JobsOpt = 1,
    plan: PlanOpt = False,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Take every tenant RUN moved back to the revision it had before, as a new run.

    A tenant that has moved since (another run touched it) is left alone and listed. Asks for
    confirmation unless --yes (or --plan, which changes nothing). A deprovision cannot be undone:
    restore its backup instead."""
    with running.guard(verbose):
        settings = opt.with_timeouts(load_settings(config), lock_timeout, statement_timeout, tenant_lock_wait)
        if not plan:
            undoing = api.undo_plan(settings, run_id, load_chain())  # refused before asking; names what would move
            moving = [tenant for tenants in undoing.groups.values() for tenant in tenants]
            at = running.counted(undoing.left_at[tenant][0] for tenant in moving)
            back = ", ".join(f"{len(tenants)} to {target or 'base'}" for (target, _), tenants in undoing.groups.items())
            running.confirm(
                yes,
                "undo",
                f"Undo run {run_id}: take {running.tenants(len(moving))}{at} back to their previous revisions ({back or 'none'})?",
            )
        run = None if plan else running.new_run(settings, "undo", f"undo {run_id}")
        report = CommandReport("undo", [], plan=plan, undoes=run_id)
        running.report(Reporter(json), report, lambda: api.undo(settings, run_id, jobs=jobs, run=run, plan=plan), run)


@app.command()
def adopt(
    tenants: Annotated[list[str] | None, typer.Argument(help="Tenant ids (or --all-tenants).", show_default=False)] = None,
    all_tenants: AllOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "--plan", help="Print the decision for each tenant; change nothing.")
    ] = False,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Bring tenants DocEX created itself under the chain: recognise their revision and stamp it.

    A known hybrid (DocEX's own indexes drifted) is repaired first, index by index, and proven
    equal to the revision; anything else is refused with a diff (exit 1), untouched.
    """
    with running.guard(verbose):
        targets = opt.targets(tenants, all_tenants)
        settings = load_settings(config)
        run = running.new_run(settings, "adopt", opt.selection(targets, all_tenants, None))
        reporter = Reporter(json)
        try:
            results = api.adopt(settings, targets, dry_run=dry_run, run=run)
        except Interrupted as stop:
            again = command(settings, *opt.adopt_arguments(targets, dry_run))
            reporter.adopt_stopped(stop, run.run_id if run.recorded else None, again, plan=dry_run)
            raise typer.Exit(stop.exit_code) from None
        if run.recorded:
            running.say_recorded(run)
        run_id = run.run_id if run.recorded else None
        reporter.results(CommandReport("adopt", results, run_id=run_id, plan=dry_run))
        reporter.late_signal(interrupts.noted(), "the last adoption had committed", run_id)
        if any(r.incomplete for r in results):
            raise typer.Exit(EXIT_FAILED)


@app.command()
def deprovision(
    tenant: Annotated[str, typer.Argument(help="The tenant id to remove.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm: the tenant's data is dropped.")] = False,
    no_backup: Annotated[bool, typer.Option("--no-backup", help="Do not write a backup first.")] = False,
    backup_dir: Annotated[
        str | None, typer.Option("--backup-dir", help="Where the backup is written (default: ./backups).", show_default=False)
    ] = None,
    lock_timeout: LockTimeoutOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Drop a tenant's schema or delete its file, after a verified backup (pg_dump, or SQLite's backup API).

    Refused (exit 1, nothing dropped) while the tenant stays in use (SQLite: while another connection has
    its file open), or when objects outside it depend on it."""
    with running.guard(verbose):
        settings = opt.with_timeouts(load_settings(config), lock_timeout, None, None)
        api.check_tenant_ids(settings, [tenant])
        written_to = opt.backup_dir(no_backup, backup_dir)
        if not yes:
            raise UsageError(f"deprovision drops every table and row of {tenant!r}: pass --yes to confirm")
        run = api.Run(settings, "deprovision", tenant)
        reporter = Reporter(json)
        try:
            done = api.deprovision(settings, tenant, backup_dir=written_to, run=run)
        except Interrupted as stop:  # before the drop: the tenant is as it was
            reporter.deprovision_stopped(stop)
            raise typer.Exit(stop.exit_code) from None
        except DocexMigrateError as exc:  # exit 1, the tenant's failure: --json reports it (exit 2 prints none)
            if exc.results:
                reporter.deprovision_failed(exc.results)
            raise
        reporter.deprovisioned(done, run.run_id if run.recorded else None)
        reporter.late_signal(interrupts.noted(), f"{tenant} was dropped", run.run_id if run.recorded else None)


@app.command()
def restore(
    tenant: Annotated[str, typer.Argument(help="The tenant id to bring back.", show_default=False)],
    backup: Annotated[
        Path,
        typer.Option("--from", help="The backup its deprovision wrote (the path deprovision printed).", show_default=False),
    ],
    lock_timeout: LockTimeoutOpt = None,
    statement_timeout: StatementTimeoutOpt = None,
    tenant_lock_wait: TenantLockWaitOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Bring a deprovisioned tenant back from its backup, at the revision it had, as a new run.

    Only the backup the run ledger recorded for this tenant's deprovision (known by its SHA-256:
    a renamed, edited or truncated file, or another tenant's backup, is refused), only while the
    tenant does not exist; all or nothing. Refused: exit 2, nothing changed. Then `upgrade` it
    if it is behind the head. An older backup of a tenant deprovisioned again since restores
    too, with a warning naming the newer backup."""
    with running.guard(verbose):
        settings = opt.with_timeouts(load_settings(config), lock_timeout, statement_timeout, tenant_lock_wait)
        reporter = Reporter(json)
        try:
            done = api.restore(settings, tenant, backup)
        except Interrupted as stop:  # before the commit: rolled back
            reporter.restore_stopped(stop, restore_command(settings, tenant, backup))
            raise typer.Exit(stop.exit_code) from None
        reporter.restored(done, late=interrupts.noted())


@app.command()
def status(
    tenant: TenantOpt = None,
    shard: ShardOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Every tenant's namespace, revision and state. Read-only: creates nothing.

    States: current, behind, ahead (a revision this chain does not know),
    corrupt (more than one row in alembic_version; REVISION lists them all),
    unversioned, missing, unreadable (the namespace cannot be read).
    Exit 1 when a tenant is corrupt or unreadable.
    """
    with running.guard(verbose):
        rows = api.status(load_settings(config), tenant, shard=opt.shard(shard))
        Reporter(json).statuses(rows, "no tenants found")
        if any(r.failed for r in rows):
            raise typer.Exit(EXIT_FAILED)


@app.command()
def verify(
    tenant: TenantOpt = None,
    all_tenants: AllOpt = False,
    shard: ShardOpt = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Undo drift that is only indexes (added, dropped, changed), proven equal after.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm --repair.")] = False,
    lock_timeout: LockTimeoutOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Prove each tenant's catalog is exactly the revision it is stamped at; list what differs.

    Read-only (unless --repair --yes). Exit 0 every tenant matches; 1 any drifted, unreadable,
    corrupt, ahead, or not verifiable. Column order is not drift.
    """
    with running.guard(verbose):
        targets = opt.targets(tenant, all_tenants)
        if repair and not yes:
            raise UsageError("verify --repair drops and creates indexes in drifted tenants: pass --yes to confirm")
        settings = opt.with_timeouts(load_settings(config), lock_timeout, None, None)  # a repair's index locks
        selection = opt.selection(tenant, all_tenants, shard)
        run = running.new_run(settings, "repair", selection) if repair else None
        reporter = Reporter(json)
        try:
            rows = api.verify(settings, targets, shard=opt.shard(shard), repair=repair, run=run)
        except Interrupted as stop:
            if run is None:
                raise  # read-only: nothing to report but the signal
            recorded = run.run_id if run.recorded else None
            reporter.repair_stopped(stop, recorded, command(settings, "verify", "--repair", "--yes", *selection.split()))
            raise typer.Exit(stop.exit_code) from None
        recorded = run.run_id if run is not None and run.recorded else None
        reporter.drift(rows, CommandReport("verify", rows, run_id=recorded) if repair else None)
        if run is not None and recorded:
            running.say_recorded(run)
        if repair:
            reporter.late_signal(interrupts.noted(), "the last repair had committed", recorded)
        if any(r.failed for r in rows):
            raise typer.Exit(EXIT_FAILED)


@app.command()
def tenants(
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List the tenants found in the database, from their namespaces alone (opens no tenant)."""
    with running.guard(verbose):
        Reporter(json).tenants(api.list_tenants(load_settings(config)))


runs_app = typer.Typer(help="The run ledger: recent runs of this database, and each run's tenants.", add_completion=False)
app.add_typer(runs_app, name="runs")


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs, newest first.")] = 20,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Recent runs: id, command, target, start and end, counts per action, and state
    (running, finished, or interrupted: a run whose process died is never shown running). Read-only."""
    if ctx.invoked_subcommand is not None:  # `runs --json show RUN`: as if given after show
        opt.before_the_command(ctx, config, json, verbose)
        return
    with running.guard(verbose):
        Reporter(json).runs(api.runs(load_settings(config), limit=limit))


@runs_app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run id.", show_default=False)],
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """One run and its tenants: the revision before and after, the action, the duration, the error.
    Tenants a killed run never recorded are reconciled with the tenants themselves. Read-only."""
    with running.guard(verbose):
        Reporter(json).run_detail(api.show_run(load_settings(config), run_id))


# The revision author's commands (cli_authoring.py), after the operator's in --help.
app.command()(revision)
app.command()(history)
app.command()(heads)
app.command()(check)


def main() -> None:
    forgive_closed_pipes()  # `docex-migrate ... | head -1` stops the output, never the run
    try:
        app()
    except SystemExit as done:
        lost = lost_output()  # e.g. `--json > /dev/full`: the command ran, its report did not reach anyone
        if not lost:
            raise
        for name, line in lost.items():  # on the other stream: the lost one cannot take it
            if line:
                print(line, file=sys.stdout if name == "stderr" else sys.stderr, flush=True)
        raise SystemExit(done.code if done.code not in (0, None) else EXIT_FAILED) from None

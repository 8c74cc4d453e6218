"""How every command runs, whatever it does: an error becomes one line on stderr and an exit
code (a traceback only with --verbose); a signal becomes the report of what was done and exit
128 + its number; a recorded run announces itself; a command that can drop data asks first.
Used by cli.py, which holds the commands themselves."""

from __future__ import annotations

import logging
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import typer

from . import api, progress
from .advice import command
from .config import Settings
from .errors import EXIT_FAILED, EXIT_USAGE, DocexMigrateError, Interrupted, UsageError
from .interrupts import finishing, signals_interrupt
from .reporting import Reporter
from .results import CommandReport, TenantResult, describe_error


@contextmanager
def guard(verbose: bool) -> Iterator[None]:
    """Turn any error into one line on stderr and an exit code (traceback only with --verbose)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        with signals_interrupt():
            yield
    except (typer.Exit, typer.Abort):
        raise
    except Interrupted as stop:  # before any tenant was touched, or while printing
        typer.echo(f"interrupted by {stop.signal_name}", err=True)
        raise typer.Exit(stop.exit_code) from None
    except DocexMigrateError as exc:
        if verbose:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:  # the database or a bug: still one line, never a password
        if verbose:
            traceback.print_exc()
        typer.echo(f"error: {describe_error(exc)} (rerun with --verbose for details)", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def finish(reporter: Reporter, report: CommandReport) -> None:
    reporter.results(report)
    if any(isinstance(r, TenantResult) and r.incomplete for r in report.tenants):
        raise typer.Exit(EXIT_FAILED)


def report(
    reporter: Reporter, report: CommandReport, run: Callable[[], list[TenantResult]], recorded: api.Run | None = None
) -> None:
    """Run a migration (or plan one) and print its results into ``report`` (the command, its
    target...). Stopped by a signal, print what it did anyway, then exit 128 + the signal's
    number, as a shell reports a process the signal killed."""
    try:
        report.tenants = run()
    except Interrupted as stop:
        run_id = recorded.run_id if recorded is not None and recorded.recorded else None
        if stop.results:
            report.tenants, report.run_id, report.interrupted = stop.results, run_id, stop.signal_name
            reporter.results(report)
        elif run_id is None:
            raise  # stopped before anything was recorded (or touched)
        if run_id is not None and recorded is not None:
            typer.echo(
                f"interrupted by {stop.signal_name}: tenants in flight were rolled back; run {run_id} is marked "
                f"interrupted: finish it with `{command(recorded.settings, *finishing(recorded).split())}`",
                err=True,
            )
        else:
            typer.echo(
                f"interrupted by {stop.signal_name}: tenants in flight were rolled back; rerun the same command to finish",
                err=True,
            )
        raise typer.Exit(stop.exit_code) from None
    if recorded is not None and recorded.recorded:
        report.run_id = recorded.run_id
        say_recorded(recorded)
    finish(reporter, report)


def say_recorded(run: api.Run) -> None:
    """On stderr: the run is in the ledger, and the command that shows it."""
    typer.echo(f"run {run.run_id} recorded: `{command(run.settings, 'runs', 'show', run.run_id)}`", err=True)


def new_run(settings: Settings, name: str, selection: str) -> api.Run:
    """A run to record, which names itself on stderr as soon as it is in the ledger, so an
    operator can follow it with `runs show` from another shell."""
    return api.Run(
        settings,
        name,
        selection,
        announce=lambda run: typer.echo(f"run {run.run_id}: {run.command} started", err=True),
        progress=progress.for_stderr(),
    )


def tenants(n: int) -> str:
    return f"{n} tenant" if n == 1 else f"{n} tenants"


def counted(revisions: Iterable[str | None]) -> str:
    """' (2 at r7, 1 at base)': how many tenants per revision, most first; '' for none."""
    counts = Counter(revision or "base" for revision in revisions)
    return f" ({', '.join(f'{n} at {rev}' for rev, n in counts.most_common())})" if counts else ""


def on_a_terminal() -> bool:
    return sys.stdin.isatty()


def confirm(yes: bool, verb: str, question: str) -> None:
    if yes:
        return
    if not on_a_terminal():
        raise UsageError(f"{verb} can drop tables and data: pass --yes to confirm")
    typer.confirm(f"{question} Tables and data may be dropped", abort=True)


def resumed(reporter: Reporter, resume: str | None, results: list[TenantResult]) -> list[TenantResult]:
    if resume is not None and not results:
        reporter.say(f"nothing to resume: every tenant of run {resume} reached its target")
    return results

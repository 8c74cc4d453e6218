"""The commands of a revision author, registered on the command line by cli.py: add a revision
(revision), read the chain (history, heads), and the CI migration checks (check)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import api
from . import cli_running as running
from .cli_options import ConfigOpt, JsonOpt, VerboseOpt
from .config import load_settings
from .errors import EXIT_FAILED, EXIT_USAGE
from .reporting import Reporter
from .results import CheckStatus


def revision(
    message: Annotated[str, typer.Option("--message", "-m", help="What the revision changes.", show_default=False)],
    autogenerate: Annotated[
        bool,
        typer.Option(
            "--autogenerate",
            help="Write the difference between a scratch tenant at head and the clone's docex_migrate/schema.py.",
        ),
    ] = False,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Add a revision on top of the chain, in the alembic/versions/ of the clone around the working directory.

    Run it inside a clone of docex-migrate (the folder holding alembic.ini, alembic/versions/ and
    docex_migrate/schema.py, or any folder below it); the installed package's revisions are never written.
    """
    with running.guard(verbose):
        path = api.new_revision(load_settings(config), message, autogenerate=autogenerate)
        reporter = Reporter(json)
        if json:
            reporter.emit_json({"path": str(path) if path else None})
        reporter.say(f"new revision: {path}" if path else "no changes detected against the tenant metadata; nothing written")


def history(json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """The revision chain, newest first."""
    with running.guard(verbose):
        Reporter(json).history(api.history())


def heads(json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """The head revision of the chain."""
    with running.guard(verbose):
        Reporter(json).heads(api.heads())


def check(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this check (repeatable); see the list below.")
    ] = None,
    update_manifest: Annotated[
        bool, typer.Option("--update-manifest", help="Record the current revisions as released (revisions.sum), then check.")
    ] = False,
    config: ConfigOpt = None,
    json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """The CI migration checks. Exit 0 all pass, 1 any fails, 2 a check could not run.

    single-head, no-schema-names, offline-sql, immutable-history, shipped-snapshots, upgrade-from-empty, stepwise,
    metadata-matches-head, downgrade-leaves-no-trace, mixed-fleet, isolation, data, replayable, docex-compat,
    fleet-at-head, fleet-drift, lint.
    The database checks run on scratch namespaces of the configured backend, removed afterwards, and, when that
    is PostgreSQL, again on SQLite files in a temporary directory; the output names the backends covered.
    """
    with running.guard(verbose):
        settings = load_settings(config)
        reporter = Reporter(json)
        if update_manifest:
            written = api.update_manifest(settings)
            reporter.say(f"manifest written: {', '.join(map(str, written))}")
        results = api.check(settings, only)
        reporter.checks(results)
        if any(r.status == CheckStatus.ERROR for r in results):
            raise typer.Exit(EXIT_USAGE)
        if any(r.status == CheckStatus.FAILED for r in results):
            raise typer.Exit(EXIT_FAILED)

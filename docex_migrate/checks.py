"""The CI migration checks (`docex-migrate check`): each proves one thing about the chain.

Static checks read the revision files; database checks run on scratch namespaces of the
configured backend (always removed afterwards); fleet-at-head reads the real tenants.
A check ends passed, failed (the chain is wrong: exit 1) or error (it could not run: exit 2).
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from . import drift, manifest, migration, outside, revision_snapshots, squawk_rules
from .adoption import statuses
from .advice import command
from .backends import open_backend
from .backends.sqlite.transactions import OBSERVER
from .chain import Chain, load_chain, script_location, writable_location
from .config import Settings
from .errors import DocexMigrateError, ToolMissingError, UnsupportedStepError, UsageError
from .invocation import invoked
from .results import MAX_DIFF, OK, CheckResult, CheckStatus, describe_error
from .review import literal_statement
from .runner import migrate_tenant, record_migration, render_offline
from .schema import metadata as docex_metadata
from .scratch import namespace_snapshot, scratch_settings
from .selection import select
from .snapshot import differences
from .states import State
from .tempdirs import locked_directory

PASSED, FAILED, ERROR, SKIPPED = CheckStatus.PASSED, CheckStatus.FAILED, CheckStatus.ERROR, CheckStatus.SKIPPED


class CheckFailed(Exception):
    """The check ran and found the chain wrong; ``evidence`` shows where."""

    def __init__(self, message: str, evidence: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.evidence = list(evidence)


class CheckSkipped(Exception):
    pass


@dataclass
class Context:
    settings: Settings
    metadata: sa.MetaData
    _chain: Chain | None = None
    _probe: outside.Probe | None = None
    baseline: outside.Objects | None = None  # what lay outside every tenant before any check ran

    def probe(self) -> outside.Probe:
        """What the chain does outside the tenant's namespace (outside.py), found once."""
        if self._probe is None:
            self._probe = outside.probe_chain(self.settings, self.chain)
        return self._probe

    @property
    def chain(self) -> Chain:
        if self._chain is None:
            self._chain = load_chain()
        return self._chain

    @property
    def folder(self) -> Path:
        return script_location()

    def revision_files(self) -> list[Path]:
        """The revision files in chain order, first to head."""
        return [Path(self.chain.script.get_revision(r).path) for r in self.chain.order]

    def all_revision_files(self) -> list[Path]:
        """Every revision file, whatever the shape of the history."""
        return sorted(Path(rev.path) for rev in self.chain.script.walk_revisions())


# --- static -------------------------------------------------------------------------------


def check_single_head(ctx: Context) -> str:
    script = ctx.chain.script
    heads = script.get_heads()
    if len(heads) != 1:
        raise CheckFailed(f"the chain has {len(heads)} heads: merge them into one revision", heads)
    problems = []
    for rev in script.walk_revisions():
        if isinstance(rev.down_revision, (tuple, list)) and len(rev.down_revision) > 1:
            problems.append(f"{rev.revision} merges {', '.join(rev.down_revision)}")
        if len(rev.nextrev) > 1:
            problems.append(f"{rev.revision} branches into {', '.join(sorted(rev.nextrev))}")
    if problems:
        raise CheckFailed("the history is not linear: every tenant must take the same path", problems)
    return f"one head ({heads[0]}), {len(ctx.chain.order)} revisions in a line"


_SCHEMA_KEYWORDS = {"schema", "referent_schema", "source_schema", "version_table_schema"}
_QUALIFIED = re.compile(r'(?i)(\b(public|pg_catalog|information_schema|tenant_\w*)\s*\.\s*"?[a-z_]|"[^"]+"\s*\.\s*"?[a-z_])')
_SQL_CALLS = {"execute", "text", "exec_driver_sql"}


def check_no_schema_names(ctx: Context) -> str:
    """No revision names a schema: the search_path decides which tenant a statement touches.

    A fast first pass reads the revisions' source; then what each revision actually does
    outside the tenant's namespace is asked of the database (outside.py), on a linear chain."""
    evidence = []
    files = ctx.all_revision_files()
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg in _SCHEMA_KEYWORDS:
                    evidence.append(f"{path.name}:{node.lineno}: passes {keyword.arg}=")
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in _SQL_CALLS:
                for arg in node.args:
                    for const in ast.walk(arg):
                        if isinstance(const, ast.Constant) and isinstance(const.value, str) and _QUALIFIED.search(const.value):
                            evidence.append(f"{path.name}:{const.lineno}: schema-qualified SQL {const.value[:80]!r}")
    if evidence:
        raise CheckFailed("revisions must not name a schema; each run is scoped to one tenant", evidence)
    if len(ctx.chain.script.get_heads()) != 1:  # single-head says why; the source pass is all there is
        return f"{len(files)} revisions, no schema names (not run: the chain has no single head)"
    probe = ctx.probe()
    if probe.evidence:
        raise CheckFailed(
            "revisions changed the database outside the tenant's namespace; each run is scoped to one tenant", probe.evidence
        )
    stopped = f" (stopped after {probe.steps} steps: {probe.stopped})" if probe.stopped else ""
    return f"{len(files)} revisions, no schema names; {probe.steps} steps up and down touched nothing outside the tenant{stopped}"


def _recorded_sqlite(chain: Chain) -> list[str]:
    """What `upgrade --sql` does on SQLite (review.py): each step migrated for real on a scratch
    file and its statements written out as a script, up and down. A batch rebuild then sees
    each table as it is at that moment (a column added just before it, too)."""
    failures: list[str] = []
    refused: list[str] = []
    order = chain.order
    token = OBSERVER.set(outside.refusing_attach(refused))  # its writes are committed: nothing outside the file
    try:
        _record_steps(chain, order, failures)
    finally:
        OBSERVER.reset(token)
    return [f"{line}; {refused[0]}" if refused else line for line in failures]


def _record_steps(chain: Chain, order: list[str], failures: list[str]) -> None:
    with locked_directory("docex_migrate_offline_", sweep=True) as directory:
        with open_backend(Settings().with_template(f"{directory}/{{tenant_id}}.db")) as shadow:
            migrate_tenant(shadow, "up", None, create=True, chain=chain)
            for i, revision in enumerate(order):
                down = order[i - 1] if i else None
                # "up" climbs the chain; each downgrade is recorded on a copy of it ("down"), so
                # a downgrade that leaves a trace (another check's business) is not climbed over.
                for tenant_id, target, downgrade in (("up", revision, False), ("down", down, True)):
                    try:
                        if downgrade:
                            shutil.copyfile(shadow.namespace("up"), shadow.namespace("down"))
                        for sql, parameters in record_migration(shadow, tenant_id, chain, target, downgrade=downgrade):
                            literal_statement(sql, parameters)
                    except Exception as exc:
                        way = "downgrade" if downgrade else "upgrade"
                        failures.append(f"{revision} {way} on sqlite: {describe_error(exc)}")
                        if not downgrade:
                            return  # the chain stops here on SQLite


def check_offline_sql(ctx: Context) -> str:
    """Every revision renders as SQL without a database (--sql), up and down, on both dialects.

    PostgreSQL: Alembic's offline mode, as `upgrade --sql` renders it. SQLite: as `upgrade
    --sql` scripts it there, recorded from a scratch file migrated step by step."""
    failures = []
    order = ctx.chain.order
    for i, revision in enumerate(order):
        down = order[i - 1] if i else None
        for downgrade in (False, True):
            try:
                render_offline(revision, down, dialect="postgresql", downgrade=downgrade)
            except Exception as exc:
                way = "downgrade" if downgrade else "upgrade"
                failures.append(f"{revision} {way} on postgresql: {describe_error(exc)}")
    failures += _recorded_sqlite(ctx.chain)
    if failures:
        raise CheckFailed("some revisions cannot be rendered with --sql", failures)
    return f"{len(order)} revisions render up and down for PostgreSQL and SQLite"


def check_immutable_history(ctx: Context) -> str:
    released = manifest.read(ctx.folder / manifest.MANIFEST_NAME)
    if released is None:
        raise CheckFailed(
            f"no {manifest.MANIFEST_NAME} in {ctx.folder}: run `{command(ctx.settings, 'check', '--update-manifest')}`"
        )
    problems, new = manifest.compare(released, manifest.chained(ctx.revision_files()))
    if problems:
        raise CheckFailed("released revisions must never change: add a new revision instead", problems)
    tail = f"; new since the last release: {', '.join(new)}" if new else ""
    return f"{len(released)} released revisions unchanged{tail}"


def check_shipped_snapshots(ctx: Context) -> str:
    """The snapshots the package ships (for read-only recognition) are what the chain produces here."""
    kind = revision_snapshots.kind_of(ctx.settings)
    shipped = revision_snapshots.shipped(kind, ctx.chain, partial=True) or {}
    order = ctx.chain.order
    released = [r for r in order if r in shipped]  # revisions newer than these are the other checks' business
    computed = revision_snapshots.compute(ctx.settings, ctx.chain, order[: order.index(released[-1]) + 1]) if released else {}
    evidence = [f"{r}: {line}" for r in ctx.chain.order if r in shipped for line in differences(shipped[r], computed[r])]
    if evidence:
        raise CheckFailed(
            f"the shipped {kind} snapshots differ from what the chain produces: "
            f"run `{command(ctx.settings, 'check', '--update-manifest')}` on this backend",
            evidence[:50],
        )
    missing = [r for r in ctx.chain.order if r not in shipped]
    released_files = {e.filename for e in manifest.read(ctx.folder / manifest.MANIFEST_NAME) or []}
    unrecorded = [r for r in missing if Path(ctx.chain.script.get_revision(r).path).name in released_files]
    if unrecorded:  # a released revision's snapshot is keyed on its checksum: it was edited
        raise CheckFailed(
            f"released revisions have no shipped {kind} snapshot for what they are now: edited after release "
            f"(see immutable-history), or their snapshots were never recorded (`{command(ctx.settings, 'check', '--update-manifest')}`)",
            [f"{r}: no shipped snapshot for its chained checksum" for r in unrecorded],
        )
    tail = f"; none yet for {', '.join(missing)} (recorded by --update-manifest)" if missing else ""
    return f"{len(shipped)} shipped {kind} snapshots equal the chain's{tail}"


# --- per backend, on scratch namespaces ---------------------------------------------------


def check_upgrade_from_empty(ctx: Context, scratch: Settings) -> str:
    with open_backend(scratch) as backend:
        migrate_tenant(backend, "empty", ctx.chain.head, create=True, chain=ctx.chain)
        state = backend.read_states(["empty"])["empty"]
    if state.revisions != (ctx.chain.head,):
        raise CheckFailed(f"after upgrade head the tenant is at {state.revisions}, not {ctx.chain.head}")
    return f"an empty namespace reaches {ctx.chain.head}"


def check_stepwise(ctx: Context, scratch: Settings) -> str:
    with open_backend(scratch) as backend:
        for revision in ctx.chain.order:
            try:
                migrate_tenant(backend, "stepwise", revision, create=True, chain=ctx.chain)
            except Exception as exc:
                raise CheckFailed(f"upgrade to {revision} failed one step at a time", [describe_error(exc)]) from None
    return f"{len(ctx.chain.order)} steps, one at a time"


def check_metadata_matches_head(ctx: Context, scratch: Settings) -> str:
    with open_backend(scratch) as backend:
        migrate_tenant(backend, "metadata", ctx.chain.head, create=True, chain=ctx.chain)
        engine = backend.reflection_engine("metadata")
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
                diffs = compare_metadata(context, ctx.metadata)
        finally:
            engine.dispose()
    if diffs:
        raise CheckFailed(
            "the package's tenant metadata and the head of the chain differ: add a revision "
            "(autogenerate would emit the operations below) or fix the metadata",
            [repr(d) for d in diffs],
        )
    return "autogenerate finds nothing to do at head"


def check_downgrade_leaves_no_trace(ctx: Context, scratch: Settings) -> str:
    previous = None
    with open_backend(scratch) as backend:
        migrate_tenant(backend, "roundtrip", None, create=True, chain=ctx.chain)
        for revision in ctx.chain.order:
            before = namespace_snapshot(backend, "roundtrip")
            migrate_tenant(backend, "roundtrip", revision, chain=ctx.chain)
            migrate_tenant(backend, "roundtrip", previous, downgrade=True, chain=ctx.chain)
            diff = differences(before, namespace_snapshot(backend, "roundtrip"))
            if diff:
                raise CheckFailed(
                    f"the downgrade of {revision} leaves a trace: the catalog differs from before its upgrade", diff
                )
            migrate_tenant(backend, "roundtrip", revision, chain=ctx.chain)
            previous = revision
    return f"{len(ctx.chain.order)} downgrades restore the catalog exactly"


# --- fleet ---------------------------------------------------------------------------------


def _fleet(ctx: Context, scratch: Settings) -> list[str]:
    """Scratch tenants at base, head-2 and head-1 upgraded to head through the real loop."""
    order = ctx.chain.order
    starts: dict[str, str | None] = {"fleet-base": None}
    for back in (2, 1):
        if len(order) > back:
            starts[f"fleet-head-{back}"] = order[-1 - back]
    with open_backend(scratch) as backend:
        for tenant_id, revision in starts.items():
            migrate_tenant(backend, tenant_id, revision, create=True, chain=ctx.chain)
    with invoked(scratch, chain=ctx.chain) as inv:
        results = migration.upgrade(inv, list(starts), ctx.chain.head)
        failed = [f"{r.tenant_id}: {r.message}" for r in results if r.failed]
        if failed:
            raise CheckFailed("tenants at mixed revisions did not all reach head through the loop", failed)
        not_current = [f"{s.tenant_id}: {s.state}" for s in statuses(inv, list(starts)) if s.state != State.CURRENT]
    if not_current:
        raise CheckFailed("after the loop some tenants are not at head", not_current)
    return list(starts)


def check_mixed_fleet(ctx: Context, scratch: Settings) -> str:
    tenants = _fleet(ctx, scratch)
    return f"tenants {', '.join(tenants)} all reached {ctx.chain.head} through the loop"


def check_isolation(ctx: Context, scratch: Settings) -> str:
    """Nothing outside the tenant changes, step by step up and down (outside.py, rolled back);
    then, in a clean scratch, a fleet upgraded through the loop leaves identical tenants and
    the database outside them as it was before any check ran."""
    probe = ctx.probe()
    if probe.evidence:
        raise CheckFailed(
            "tenants are not isolated: revisions changed the database outside the tenant's namespace", probe.evidence
        )
    tenants = _fleet(ctx, scratch)
    with open_backend(scratch) as backend:
        snapshots = {t: namespace_snapshot(backend, t) for t in tenants}
    evidence = []
    first = tenants[0]
    for other in tenants[1:]:
        evidence += [f"{other} vs {first}: {line}" for line in differences(snapshots[first], snapshots[other])]
    after = outside.objects_outside(scratch)
    if ctx.baseline is not None and after is not None:
        evidence += [f"outside the tenants: {line}" for line in outside.compare_objects(ctx.baseline, after)]
    if evidence:
        raise CheckFailed("tenants are not isolated: something landed outside the tenants or tenants differ", evidence)
    where = "nothing outside the tenants changed, " if after is not None else "nothing written outside the tenant's file, "
    return f"{where}{len(tenants)} tenant namespaces identical"


def check_fleet_at_head(ctx: Context) -> str:
    with invoked(ctx.settings, chain=ctx.chain) as inv:
        rows = statuses(inv, None)
    behind = [f"{r.tenant_id} ({r.namespace}): {r.state} at {r.revision or 'base'}" for r in rows if r.state != State.CURRENT]
    if behind:
        raise CheckFailed(
            f"{len(behind)} of {len(rows)} tenants are not at {ctx.chain.head}: run `{command(ctx.settings, 'upgrade', '--all-tenants')}`",
            behind,
        )
    return f"all {len(rows)} tenants at {ctx.chain.head}"


def check_fleet_drift(ctx: Context) -> str:
    """Every versioned tenant of the configured database is exactly the revision it is stamped
    at (see drift.py): a pipeline pointed at staging fails on drift before it deploys."""
    with open_backend(ctx.settings) as backend:
        if not select(backend, None):
            raise CheckSkipped("the configured database holds no tenants")
    with invoked(ctx.settings, chain=ctx.chain) as inv:
        rows = drift.verify(inv)
    bad = [r for r in rows if r.failed]
    if bad:
        evidence = []
        for r in bad:
            evidence.append(
                f"{r.tenant_id} ({r.namespace}): {r.state} at {r.revision or 'base'}" + (f": {r.error}" if r.error else "")
            )
            evidence += [f"  {line}" for line in r.diff[:MAX_DIFF]]
        raise CheckFailed(
            f"{len(bad)} of {len(rows)} tenants are not exactly the revision they are stamped at: "
            f"see `{command(ctx.settings, 'verify', '--all-tenants')}` (index drift: `--repair --yes`)",
            evidence,
        )
    compared = [r for r in rows if r.state == OK]
    catalogs = len({(r.revision, r.fingerprint) for r in compared})
    return f"{len(compared)} versioned tenants exactly their revision ({catalogs} distinct catalogs compared)"


# --- lint ----------------------------------------------------------------------------------


def _squawk() -> str:
    found = shutil.which("squawk") or shutil.which("squawk", path=str(Path(sys.executable).parent))
    if not found:
        raise ToolMissingError("squawk is not installed: pip install 'docex-migrate[check]' (squawk-cli)")
    return found


def check_lint(ctx: Context) -> str:
    """PostgreSQL lock and safety rules (squawk) on the SQL of revisions not released as they
    are now (new ones, and a released one edited since, with every one after it).

    A revision opts out of a rule with a module-level ``squawk_ignore = {"rule": "why"}``;
    an opt-out without a reason fails."""
    released = manifest.read(ctx.folder / manifest.MANIFEST_NAME) or []
    order = ctx.chain.order
    # Every revision the manifest does not hold as it is now: new ones, and from the first
    # released revision edited since (a chained checksum changes every one after it) on.
    current = manifest.chained(ctx.revision_files())
    new = [r for i, r in enumerate(order) if i >= len(released) or current[i] != released[i]]
    if not new:
        return "no revisions since the last release"
    squawk = _squawk()
    evidence = []
    for revision in new:
        script = ctx.chain.script.get_revision(revision)
        ignore = getattr(script.module, "squawk_ignore", {}) or {}
        missing = [rule for rule, why in ignore.items() if not str(why).strip()]
        evidence += [f"{revision}: squawk_ignore[{rule!r}] needs a reason" for rule in missing]
        index = order.index(revision)
        sql = render_offline(revision, order[index - 1] if index else None, dialect="postgresql")
        # The tenant's transaction is ours (squawk --assume-in-transaction): drop Alembic's own.
        sql = "\n".join(line for line in sql.splitlines() if line.strip() not in ("BEGIN;", "COMMIT;"))
        # The rules that cannot apply to the tool are off, with their reasons, in squawk_rules.py.
        args = [squawk, "--reporter", "gcc", f"--stdin-filepath={revision}.sql", *squawk_rules.arguments(ignore)]
        done = subprocess.run(args, input=sql, capture_output=True, text=True)
        if done.returncode != 0:
            evidence += [line for line in done.stdout.splitlines() if line.strip()] or [done.stderr.strip()]
    if evidence:
        raise CheckFailed("squawk found unsafe SQL in revisions not released as they are now", evidence)
    return f"{len(new)} new or edited revision(s) pass squawk"


def _in_module(module: str, function: str) -> Callable[..., str]:
    """A check that lives in its own module (check_*.py), imported when it runs: those modules
    import this one for Context and CheckFailed."""

    def run(*args: Any) -> str:
        found: Callable[..., str] = getattr(importlib.import_module(f".{module}", __package__), function)
        return found(*args)

    return run


@dataclass(frozen=True)
class Check:
    name: str
    statement: str
    run: Callable[..., str]
    scratch: bool = False  # runs on scratch namespaces of the configured backend
    needs_chain: bool = True  # skipped when the chain has no single, linear head


CHECKS = (
    Check("single-head", "the chain has one head and a linear history", check_single_head, needs_chain=False),
    Check(
        "no-schema-names",
        "no revision touches anything outside the tenant's namespace (its source, then what it did, step by step)",
        check_no_schema_names,
        needs_chain=False,
    ),
    Check(
        "offline-sql",
        "every revision's script is produced as upgrade --sql produces it, for PostgreSQL and SQLite, up and down",
        check_offline_sql,
    ),
    Check("immutable-history", "released revisions match the manifest of chained checksums", check_immutable_history),
    Check(
        "shipped-snapshots",
        "the revision snapshots shipped for read-only recognition equal the chain's, one for every released revision",
        check_shipped_snapshots,
    ),
    Check("upgrade-from-empty", "an empty namespace upgrades to head", check_upgrade_from_empty, scratch=True),
    Check("stepwise", "every revision applies on its own, one at a time", check_stepwise, scratch=True),
    Check(
        "metadata-matches-head",
        "autogenerate against the package's tenant metadata finds nothing at head",
        check_metadata_matches_head,
        scratch=True,
    ),
    Check(
        "downgrade-leaves-no-trace",
        "every downgrade restores the catalog exactly as before its upgrade",
        check_downgrade_leaves_no_trace,
        scratch=True,
    ),
    Check(
        "mixed-fleet", "tenants at base, head-2 and head-1 all reach head through the real loop", check_mixed_fleet, scratch=True
    ),
    Check(
        "isolation",
        "nothing outside the tenant changes, and after the fleet upgrade all tenants are identical",
        check_isolation,
        scratch=True,
    ),
    Check(
        "data",
        "every revision upgrades and downgrades over rows in every table, and its round trip loses none (unless destructive)",
        _in_module("check_data", "check_data"),
        scratch=True,
    ),
    Check(
        "replayable",
        "every revision gives two tenants with different ids the same catalog and rows, unless replayable = False",
        _in_module("check_replay", "check_replayable"),
        scratch=True,
    ),
    Check(
        "docex-compat",
        "DocEX's newest release can use a tenant at head: its tables exactly as DocEX creates them",
        _in_module("check_compat", "check_docex_compat"),
        scratch=True,
    ),
    Check("fleet-at-head", "every tenant of the configured database is at head (the deploy gate)", check_fleet_at_head),
    Check("fleet-drift", "every versioned tenant of the configured database is exactly its revision", check_fleet_drift),
    Check("lint", "SQL of revisions not released as they are now passes squawk (PostgreSQL)", check_lint),
)
NAMES = tuple(c.name for c in CHECKS)


def run_checks(
    settings: Settings, only: Sequence[str] | None = None, *, metadata: sa.MetaData | None = None
) -> list[CheckResult]:
    unknown = [n for n in only or () if n not in NAMES]
    if unknown:
        raise UsageError(f"unknown check {', '.join(unknown)}: choose from {', '.join(NAMES)}")
    selected = [c for c in CHECKS if not only or c.name in only]
    ctx = Context(settings, metadata if metadata is not None else docex_metadata)
    results: list[CheckResult] = []
    chain_ok = True
    if any(c.scratch for c in selected):
        ctx.baseline = _baseline(settings)
    for check in selected:
        result = CheckResult(check.name, check.statement, PASSED)
        try:
            if check.needs_chain and not chain_ok:
                raise CheckSkipped("needs a chain with one head (see single-head)")
            if check.scratch:
                result.message = _on_clean_scratch(ctx, check)
            else:
                result.message = check.run(ctx)
        except CheckFailed as failure:
            result.status, result.message, result.evidence = FAILED, str(failure), failure.evidence
        except CheckSkipped as skipped:
            result.status, result.message = SKIPPED, str(skipped)
        except UnsupportedStepError as exc:  # a revision asked for what a tenant's transaction cannot give
            result.status, result.message = FAILED, "a migration failed"
            result.evidence = [str(exc)]
        except DocexMigrateError as exc:  # could not run (no database, no squawk, ...): exit 2
            result.status, result.message = ERROR, str(exc)
        except Exception as exc:  # a revision raised or the database refused its SQL
            result.status, result.message = FAILED, "a migration failed"
            result.evidence = [describe_error(exc)]
        if check.name == "single-head" and result.status != PASSED:
            chain_ok = False
        results.append(result)
    return results


def _baseline(settings: Settings) -> outside.Objects | None:
    try:
        return outside.objects_outside(settings)
    except DocexMigrateError:  # no database: the checks that need one say so
        return None


def _on_clean_scratch(ctx: Context, check: Check) -> str:
    """Run a database check on scratch namespaces of its own, removed afterwards. A chain that
    changes the database outside the tenant is not run for real by any check (only the
    rolled-back probe has seen it): what it wrote there would stay behind."""
    if check.run is not check_isolation and ctx.probe().evidence:
        raise CheckSkipped(
            "not run: the chain changes the database outside the tenant's namespace (see isolation), which would stay behind"
        )
    with scratch_settings(ctx.settings, committed=True) as scratch:
        return check.run(ctx, scratch)


def update_manifest(settings: Settings) -> list[Path]:
    """Record the current revisions as released: revisions.sum, and their snapshots for SQLite
    and (when configured) PostgreSQL."""
    ctx = Context(settings, docex_metadata)
    path = writable_location() / manifest.MANIFEST_NAME
    manifest.write(path, manifest.chained(ctx.revision_files()))
    return [path, revision_snapshots.write(settings, ctx.chain)]

"""The Python API: what the CLI commands do, callable from applications and tests.

Every function takes the Settings first (as Alembic's commands take their Config), refuses bad
input before touching any namespace, and returns one result per tenant: a failing tenant is a
value in the list, never an exception that stops the others.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from . import adoption
from . import fresh as fresh_tenants
from . import schema as tenant_schema
from .backends import Backend, NamespaceState, backend_for
from .chain import Chain, load_chain, script_location
from .config import ROW_LEVEL, Settings, load_settings
from .errors import (
    ConfigError,
    DatabaseUnavailableError,
    DocexMigrateError,
    TenantNotFoundError,
    UsageError,
)
from .executors import WorkItem, execute, not_run
from .runner import (
    ALREADY_AT_TARGET,
    TenantResult,
    author_revision,
    describe_error,
    stamp_tenant,
)
from .scratch import scratch_settings
from .snapshot import differences

log = logging.getLogger(__name__)

CURRENT, BEHIND, AHEAD, UNVERSIONED, MISSING = "current", "behind", "ahead", "unversioned", "missing"
UNREADABLE = "unreadable"  # exists but cannot be read (corrupt file, no privilege): that tenant's failure
CORRUPT = "corrupt"  # more than one row in alembic_version: the linear chain keeps exactly one
NEEDS_ADOPT = "needs-adopt"  # skipped: an unversioned tenant with tables is never migrated blindly


@dataclass(frozen=True)
class TenantStatus:
    tenant_id: str
    namespace: str
    revision: str | None
    state: str  # current, behind, ahead, corrupt, unversioned, missing, unreadable
    matches: str | None = None  # unversioned only: the revision adopt would stamp
    adopt: str | None = None  # unversioned only: adopt (exact), repair (indexes), refuse, or unknown
    error: str | None = None  # unreadable: why; unversioned with adopt unknown: why recognition could not run

    @property
    def failed(self) -> bool:
        return self.state in (UNREADABLE, CORRUPT)  # needs a person before it can be migrated

    def as_dict(self) -> dict[str, object]:
        row: dict[str, object] = {
            "tenant_id": self.tenant_id, "namespace": self.namespace, "revision": self.revision, "state": self.state
        }
        if self.state == UNVERSIONED:
            row.update(matches=self.matches, adopt=self.adopt)
        if self.error:
            row["error"] = self.error
        return row


def _unique(tenant_ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(tenant_ids))


def _validated(backend: Backend, tenant_ids: Iterable[str]) -> dict[str, str]:
    """tenant id -> namespace for every id, raising for the first refused one before any I/O."""
    return {t: backend.namespace(t) for t in _unique(tenant_ids)}


def check_tenant_ids(settings: Settings, tenant_ids: Iterable[str]) -> dict[str, str]:
    """tenant id -> namespace, or InvalidTenantError for the first id that is refused."""
    return _validated(backend_for(settings), tenant_ids)


def _select(backend: Backend, tenant_ids: Sequence[str] | None) -> dict[str, str]:
    """The tenants named, or every tenant found when ``tenant_ids`` is None."""
    if tenant_ids is None:
        return _validated(backend, backend.discover())
    if not tenant_ids:
        raise UsageError("name at least one tenant (--tenant ID) or pass --all-tenants")
    return _validated(backend, tenant_ids)


def _state_of(chain: Chain, state: NamespaceState) -> tuple[str | None, str]:
    if not state.exists:
        return None, MISSING
    if state.error:
        return None, UNREADABLE
    if not state.versioned:
        return None, UNVERSIONED
    if not state.revisions:
        return None, BEHIND  # at base: the version table is there, empty
    if len(state.revisions) > 1:
        return ",".join(state.revisions), CORRUPT
    revision = state.revisions[0]
    if revision == chain.head:
        return revision, CURRENT
    return revision, BEHIND if chain.knows(revision) else AHEAD


def status(
    settings: Settings,
    tenant_ids: Sequence[str] | None = None,
    *,
    shard: tuple[int, int] | None = None,
    chain: Chain | None = None,
) -> list[TenantStatus]:
    """Every tenant's revision and state, read in bulk without Alembic; creates nothing."""
    chain = chain or load_chain()
    backend = backend_for(settings)
    try:
        namespaces = in_shard(_select(backend, None if not tenant_ids else tenant_ids), shard)
        states = backend.read_states(namespaces)
        rows = []
        for tenant_id, namespace in namespaces.items():
            revision, state = _state_of(chain, states[tenant_id])
            row = TenantStatus(tenant_id, namespace, revision, state, error=states[tenant_id].error)
            if state == UNVERSIONED and states[tenant_id].table_count:
                row = _with_recognition(settings, backend, chain, row)
            rows.append(row)
        return rows
    finally:
        backend.dispose()


def _with_recognition(settings: Settings, backend: Backend, chain: Chain, row: TenantStatus) -> TenantStatus:
    """An unversioned tenant's row, with the revision adopt would stamp. Read-only: without the
    chain's snapshots for this backend (see adoption.revision_snapshots) it says so instead."""
    snaps = adoption.revision_snapshots(settings, chain)
    if snaps is None:
        return replace(row, adopt=adoption.UNKNOWN, error=adoption.NO_SNAPSHOTS)
    try:
        tenant = adoption.tenant_snapshot(backend, row.tenant_id)
    except sa.exc.SQLAlchemyError as exc:
        return replace(row, state=UNREADABLE, error=f"cannot read its catalog: {describe_error(exc)}")
    recognition = adoption.recognise(tenant, snaps, chain.order)
    return replace(row, matches=recognition.revision, adopt=recognition.action)


def _recognise(settings: Settings, backend: Backend, chain: Chain, tenant_id: str) -> adoption.Recognition:
    snaps = adoption.revision_snapshots(settings, chain)
    if snaps is None:
        raise DocexMigrateError(adoption.NO_SNAPSHOTS)
    return adoption.recognise(adoption.tenant_snapshot(backend, tenant_id), snaps, chain.order)


def adopt(
    settings: Settings, tenant_ids: Sequence[str] | None = None, *, dry_run: bool = False, chain: Chain | None = None
) -> list[TenantResult]:
    """Stamp tenants that DocEX created itself at the revision they are (see adoption.py).

    A tenant already versioned is reported and left alone; one that matches nothing is refused
    with the diff and left untouched. ``dry_run`` decides and reports, changing nothing."""
    chain = chain or load_chain()
    backend = backend_for(settings)
    try:
        namespaces = _select(backend, tenant_ids)
        states = backend.read_states(namespaces)
        return [_adopt_one(settings, backend, chain, t, ns, states[t], dry_run) for t, ns in namespaces.items()]
    finally:
        backend.dispose()


def _corrupt(state: NamespaceState) -> str:
    return (
        f"has {len(state.revisions)} rows in alembic_version ({', '.join(state.revisions)}): "
        "a corrupt or branched version table; fix it by hand to one row"
    )


def _adopt_one(
    settings: Settings, backend: Backend, chain: Chain, tenant_id: str, namespace: str, state: NamespaceState, dry_run: bool
) -> TenantResult:
    revision, kind = _state_of(chain, state)
    result = TenantResult(tenant_id, namespace, "skipped", revision, revision)
    if kind == MISSING:
        result.action, result.message = "failed", "does not exist"
        return result
    if kind in (UNREADABLE, CORRUPT):
        result.action, result.message = "failed", state.error or _corrupt(state)
        return result
    if kind != UNVERSIONED:
        result.message = f"already versioned at {revision or 'base'}: left alone"
        return result
    if not state.table_count:
        result.message = f"empty: nothing to adopt (run `docex-migrate provision {tenant_id} --exist-ok`)"
        return result
    try:
        recognition = _recognise(settings, backend, chain, tenant_id)
    except (DocexMigrateError, sa.exc.SQLAlchemyError) as exc:
        result.action, result.message = "failed", f"cannot recognise it: {describe_error(exc)}"
        return result
    result.to_revision = recognition.revision
    if recognition.action == adoption.REFUSE:
        result.action = "failed"
        result.message = f"matches no revision (nearest: {recognition.revision}); refused, nothing changed"
        result.details = recognition.diff
        return result
    result.details = recognition.describe_repairs()
    repaired = f" after {len(recognition.repairs)} index repair(s)" if recognition.repairs else ""
    if dry_run:
        result.action = "would-adopt"
        result.message = f"would be stamped at {recognition.revision}{repaired}"
        return result
    snaps = adoption.revision_snapshots(settings, chain)
    assert snaps is not None  # recognition above needed them
    expected = snaps[recognition.revision]

    def repair_and_prove(connection: sa.Connection) -> None:
        adoption.apply_repairs(connection, recognition)
        left = differences(expected, adoption.tenant_snapshot(backend, tenant_id, connection))
        if left:  # never stamp what is not exactly the revision; the transaction rolls back
            raise DocexMigrateError(f"after repair the tenant still differs from {recognition.revision}: {left[0]}")

    try:
        stamp_tenant(backend, tenant_id, recognition.revision, repair_and_prove)
    except DatabaseUnavailableError:
        raise
    except Exception as exc:
        result.action, result.message = "failed", describe_error(exc)
        return result
    result.action, result.message = "adopted", f"stamped at {recognition.revision}{repaired}"
    return result


def list_tenants(settings: Settings) -> dict[str, str]:
    """The tenants found in the database: tenant id -> namespace, from the namespaces alone.

    Cheap and read-only: no tenant is opened, so a corrupt or unreadable one is still listed
    (``status`` says what is wrong with it)."""
    backend = backend_for(settings)
    try:
        return _select(backend, None)
    finally:
        backend.dispose()


def _plan(
    chain: Chain, tenant_id: str, namespace: str, state: NamespaceState, target: str | None, *, downgrade: bool
) -> TenantResult | None:
    """A finished result when this tenant needs no Alembic run (skipped or refused), else None."""
    revision, kind = _state_of(chain, state)
    result = TenantResult(tenant_id, namespace, "failed", revision, revision)
    if kind == MISSING:
        result.message = f"does not exist: run `docex-migrate provision {tenant_id}` first"
    elif kind == UNREADABLE:
        result.message = state.error or "cannot be read"
    elif kind == UNVERSIONED and state.table_count:
        result.action = NEEDS_ADOPT
        result.message = (
            f"has {state.table_count} tables but no alembic_version (created by DocEX itself): "
            f"run `docex-migrate adopt {tenant_id}`, or upgrade with --adopt"
        )
    elif kind == CORRUPT:
        result.message = _corrupt(state)
    elif kind == AHEAD:
        result.message = f"is at revision {revision}, which this chain does not know: use a newer docex-migrate"
    else:
        here, there = chain.position(revision), chain.position(target)
        if (here <= there) if downgrade else (here >= there):
            result.action = "skipped"
            result.message = ALREADY_AT_TARGET
        else:
            return None
    return result


def _run(
    settings: Settings,
    tenant_ids: Sequence[str] | None,
    revision: str,
    *,
    downgrade: bool,
    max_failures: int | None = None,
    adopt_first: bool = False,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    chain: Chain | None = None,
    verify_first: bool = False,
) -> list[TenantResult]:
    if max_failures is not None and max_failures < 1:
        raise UsageError(f"--max-failures must be at least 1, not {max_failures}")
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {jobs}")
    chain = chain or load_chain()
    target = chain.resolve(revision)
    backend = backend_for(settings)
    try:
        namespaces = in_shard(_select(backend, tenant_ids), shard)
        states = backend.read_states(namespaces)
        finished: dict[str, TenantResult] = {}
        adopted: dict[str, TenantResult] = {}
        work: list[WorkItem] = []
        for tenant_id, namespace in namespaces.items():
            state = states[tenant_id]
            if adopt_first and state.exists and not state.versioned and state.table_count:
                adopted[tenant_id] = _adopt_one(settings, backend, chain, tenant_id, namespace, state, dry_run=False)
                state = backend.read_states([tenant_id])[tenant_id]
            if tenant_id in adopted and adopted[tenant_id].failed:
                finished[tenant_id] = adopted[tenant_id]
                continue
            planned = _plan(chain, tenant_id, namespace, state, target, downgrade=downgrade)
            if planned is not None:
                finished[tenant_id] = planned
            else:
                revision_now = _state_of(chain, state)[0]
                work.append(WorkItem(tenant_id, namespace, revision_now, target, downgrade, versioned=state.versioned))
        if verify_first:  # a tenant not proven exactly its revision is left alone, as a failure
            from .drift import hold_back_drifted

            work = hold_back_drifted(settings, backend, chain, work, finished)
        refused = sum(r.failed for r in finished.values())  # refusals count towards --max-failures
        budget = None if max_failures is None else max_failures - refused
        if budget is not None and budget <= 0:
            finished.update((i.tenant_id, not_run(i, refused)) for i in work)
        else:
            finished.update((r.tenant_id, r) for r in execute(settings, backend, work, jobs=jobs, max_failures=budget))
        for tenant_id, before in adopted.items():
            result = finished[tenant_id]
            if result is not before:
                result.message = "; ".join(m for m in (before.message, result.message) if m)
                result.details = before.details + result.details
        return [finished[t] for t in namespaces]
    finally:
        backend.dispose()


def in_shard(namespaces: dict[str, str], shard: tuple[int, int] | None) -> dict[str, str]:
    """The tenants of shard K of N (0 <= K < N): a stable hash of the tenant id, the same on
    every machine and run, so N jobs (a Kubernetes indexed Job, a CI matrix) split a fleet."""
    if shard is None:
        return namespaces
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise UsageError(f"--shard {index}/{count}: use K/N with 0 <= K < N, e.g. 0/4")
    return {t: ns for t, ns in namespaces.items() if int(hashlib.sha256(t.encode()).hexdigest(), 16) % count == index}


def upgrade(settings: Settings, tenant_ids: Sequence[str] | None = None, revision: str = "head", **kw) -> list[TenantResult]:
    """Bring tenants (None = every tenant found) to ``revision``; tenants already there are skipped.

    A failing tenant does not stop the others unless ``max_failures`` is reached (1 = fail fast);
    the tenants after that are reported as not run."""
    return _run(settings, tenant_ids, revision, downgrade=False, **kw)


def downgrade(settings: Settings, tenant_ids: Sequence[str] | None, revision: str, **kw) -> list[TenantResult]:
    """Take tenants back to ``revision`` ('base' removes every table)."""
    return _run(settings, tenant_ids, revision, downgrade=True, **kw)


def provision(
    settings: Settings,
    tenant_ids: Sequence[str],
    *,
    verify: bool = False,
    exist_ok: bool = False,
    jobs: int = 1,
    replay: bool = True,
    chain: Chain | None = None,
) -> list[TenantResult]:
    """Create each tenant's namespace and upgrade it to head, in one transaction per tenant.

    A fresh namespace gets the chain's own statements replayed (``replay``, see fresh.py)
    instead of a full Alembic run: the same result, without Alembic's cost per tenant.

    An existing tenant is a failure ("already exists") unless ``exist_ok``, when it is brought
    to head instead. ``verify`` then proves each tenant works and leaves no trace.
    """
    if settings.multi_tenancy_model == ROW_LEVEL:
        raise ConfigError(
            f"security.multi_tenancy_model is 'row_level' in {settings.describe_source()}: per-tenant databases "
            "need 'database_level'; rerun with --enable-multi-tenancy to set it"
        )
    if not tenant_ids:
        raise UsageError("name at least one tenant to provision")
    chain = chain or load_chain()
    backend = backend_for(settings)
    try:
        namespaces = _validated(backend, tenant_ids)
        states = backend.read_states(namespaces)
        finished: dict[str, TenantResult] = {}
        work: list[WorkItem] = []
        for tenant_id, namespace in namespaces.items():
            state = states[tenant_id]
            revision, kind = _state_of(chain, state)
            if kind in (UNREADABLE, CORRUPT):
                finished[tenant_id] = TenantResult(tenant_id, namespace, "failed", revision, revision,
                                                   state.error or _corrupt(state))
                continue
            if state.versioned and not exist_ok:
                finished[tenant_id] = TenantResult(
                    tenant_id, namespace, "failed", revision, revision,
                    f"already exists at revision {revision or 'base'}: use `docex-migrate upgrade --tenant {tenant_id}`, "
                    "or pass --exist-ok",
                )
                continue
            planned = _plan(chain, tenant_id, namespace, state, chain.head, downgrade=False) if state.exists else None
            if planned is not None:
                finished[tenant_id] = planned
            else:
                action = "upgraded" if state.versioned else "provisioned"
                fresh = not state.versioned and not state.table_count
                work.append(WorkItem(
                    tenant_id, namespace, revision, chain.head, create=True, action=action, fresh=fresh, versioned=state.versioned
                ))
        template = fresh_tenants.template(settings, chain) if replay and any(i.fresh for i in work) else None
        finished.update((r.tenant_id, r) for r in execute(settings, backend, work, jobs=jobs, template=template))
        results = [finished[t] for t in namespaces]
        for result in results:
            result.warnings.extend(backend.warnings_for(result.tenant_id))
            if verify and not result.failed:
                problems = verify_tenant(backend, result.tenant_id)
                if problems:
                    done, result.action = result.action, "failed"
                    result.message = f"{done} but verification failed: " + "; ".join(problems)
                else:
                    result.message = (result.message + "; " if result.message else "") + "verified"
        return results
    finally:
        backend.dispose()


def verify_tenant(backend: Backend, tenant_id: str) -> list[str]:
    """Prove a tenant works: every expected table and index is there, and a basket row can be
    written and read back. Runs in a transaction that is rolled back, so it leaves no trace."""
    problems: list[str] = []

    class _Rollback(Exception):
        pass

    try:
        with backend.transaction(tenant_id, create=False) as connection:
            inspector = sa.inspect(connection)
            schema = backend.schema(tenant_id)
            tables = set(inspector.get_table_names(schema=schema))
            problems += [f"table {t} is missing" for t in tenant_schema.TABLE_NAMES if t not in tables]
            indexes = {ix["name"] for t in tables & set(tenant_schema.TABLE_NAMES) for ix in inspector.get_indexes(t, schema=schema)}
            problems += [f"index {i} is missing" for i in tenant_schema.INDEX_NAMES if i not in indexes]
            if not problems:
                basket_id = f"bas_{uuid.uuid4().hex}"  # DocEX ids: prefix + uuid hex, 36 chars
                now = datetime.now(timezone.utc).replace(tzinfo=None)
                basket = tenant_schema.docbasket
                connection.execute(basket.insert().values(
                    id=basket_id, name=basket_id, storage_config={"type": "filesystem"},
                    status="active", created_at=now, updated_at=now,
                ))
                found = connection.execute(sa.select(basket.c.name).where(basket.c.id == basket_id)).scalar()
                if found != basket_id:
                    problems.append("a basket row written could not be read back")
            raise _Rollback
    except _Rollback:
        pass
    except DocexMigrateError as exc:
        problems.append(str(exc))
    except sa.exc.SQLAlchemyError as exc:
        problems.append(describe_error(exc))
    return problems


def ensure_tenant(tenant_id: str, settings: Settings | None = None) -> TenantResult:
    """Provision ``tenant_id`` on first access, or bring it to head; idempotent.

    Raises DocexMigrateError if the tenant cannot be made ready.
    """
    settings = settings or load_settings()
    (result,) = provision(settings, [tenant_id], exist_ok=True)
    if result.failed:
        raise DocexMigrateError(f"tenant {tenant_id!r}: {result.message}")
    return result


@dataclass(frozen=True)
class Deprovisioned:
    tenant_id: str
    namespace: str
    backup: Path | None

    def as_dict(self) -> dict[str, object]:
        return {"tenant_id": self.tenant_id, "namespace": self.namespace, "backup": str(self.backup) if self.backup else None}


def deprovision(settings: Settings, tenant_id: str, *, backup_dir: Path | None = Path("backups")) -> Deprovisioned:
    """Drop a tenant's schema or delete its file, after writing a backup into ``backup_dir``
    (None: no backup). The directory of a SQLite tenant goes too, but only if it is then empty.

    Backup and drop happen under one lock, and the backup is checked to hold exactly what is
    dropped. DeprovisionRefusedError (exit 1), with nothing dropped and no backup kept, when the
    tenant stays in use past the lock timeout, objects outside it depend on it (PostgreSQL), or
    the backup cannot be written or verified."""
    backend = backend_for(settings)
    try:
        namespace = backend.namespace(tenant_id)
        if not backend.read_states([tenant_id])[tenant_id].exists:
            raise TenantNotFoundError(f"tenant {tenant_id!r} does not exist (no {namespace})")
        return Deprovisioned(tenant_id, namespace, backend.deprovision(tenant_id, backup_dir))
    finally:
        backend.dispose()


def new_revision(settings: Settings, message: str, *, autogenerate: bool = False) -> Path | None:
    """Add a revision on top of the chain in the source checkout (alembic/versions/).

    ``autogenerate`` compares a scratch tenant at head (on the configured backend, removed
    afterwards) with docex_migrate/schema.py; None means it found nothing, and wrote nothing."""
    location = script_location()
    if "site-packages" in location.parts or "dist-packages" in location.parts:
        raise UsageError(
            f"the revisions in use are the installed package's ({location}): add revisions in a source "
            "checkout (alembic/ beside pyproject.toml), or point $DOCEX_MIGRATE_SCRIPT_LOCATION at one"
        )
    if not message.strip():
        raise UsageError("give the revision a message: -m 'what it changes'")
    chain = load_chain()
    if not autogenerate:
        return author_revision(None, "", message, chain.head)
    with scratch_settings(settings, committed=True) as scratch:
        backend = backend_for(scratch)
        try:
            return author_revision(backend, "autogenerate", message, chain.head)
        finally:
            backend.dispose()

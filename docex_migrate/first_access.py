"""First access: what makes ``api.ensure_tenant`` cheap enough to call on every request.

An application calls ensure_tenant before each use of a tenant; nearly always the tenant exists
and is at head. That case is one read of the tenant's version rows (Backend.version_rows: on
PostgreSQL a SELECT from its alembic_version, found by name; on SQLite one open of its file), no
catalog query, no lock, no plan; anything else (missing, behind, unreadable, a read that fails)
takes the full path, provision(exist_ok=True), with all its guarantees. The answer is the one the
full path gives for a tenant at head.

ReadyTenants is the optional per-process cache an application may pass: a tenant found at head
is not read again while the chain stays the same (its key is the chain's fingerprint: a new or
changed revision file empties it) and the settings name the same database and template.
"""

from __future__ import annotations

import threading

from .backends import Backend
from .chain import Chain
from .config import ROW_LEVEL, Settings
from .results import ALREADY_AT_TARGET, Action, TenantResult


class ReadyTenants:
    """The tenants this process has found at head, per chain and settings; thread-safe.

    It trusts that a tenant once at head stays there while the chain does: a tenant that is
    deprovisioned, or taken back by a downgrade, while the process runs is still taken for ready
    until ``forget`` (or ``clear``) is called for it, or the chain changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chain: str | None = None  # the fingerprint the entries hold for
        self._ready: dict[tuple[Settings, str], TenantResult] = {}

    def get(self, settings: Settings, chain: Chain, tenant_id: str) -> TenantResult | None:
        """The answer for ``tenant_id`` known to be at head (skipped, already there), or None:
        not known (or the chain has changed since, which empties the cache)."""
        with self._lock:
            if self._chain != chain.fingerprint:
                self._chain, self._ready = chain.fingerprint, {}
                return None
            found = self._ready.get((settings, tenant_id))
        return None if found is None else _copy(found)

    def add(self, settings: Settings, chain: Chain, result: TenantResult) -> None:
        """Remember a tenant that ``result`` left at this chain's head."""
        if result.failed or result.to_revision != chain.head:
            return
        ready = TenantResult(result.tenant_id, result.namespace, Action.SKIPPED, chain.head, chain.head, ALREADY_AT_TARGET)
        ready.warnings.extend(result.warnings)  # the next access finds it at head, as the fast path would
        with self._lock:
            if self._chain != chain.fingerprint:
                self._chain, self._ready = chain.fingerprint, {}
            self._ready[(settings, result.tenant_id)] = ready

    def forget(self, tenant_id: str) -> None:
        """Read ``tenant_id`` again on its next access (e.g. after deprovisioning it)."""
        with self._lock:
            self._ready = {key: r for key, r in self._ready.items() if key[1] != tenant_id}

    def clear(self) -> None:
        with self._lock:
            self._ready = {}

    def __len__(self) -> int:
        return len(self._ready)


def _copy(result: TenantResult) -> TenantResult:
    return TenantResult(
        result.tenant_id, result.namespace, result.action, result.from_revision, result.to_revision, result.message,
        list(result.warnings),
    )  # fmt: skip


def at_head(settings: Settings, backend: Backend, chain: Chain, tenant_id: str) -> TenantResult | None:
    """The full path's result for a tenant found at head by one read of its version rows; None
    when it is not (or cannot be told so cheaply): the caller then takes the full path. A
    row-level configuration is never answered here: the full path refuses it."""
    if settings.multi_tenancy_model == ROW_LEVEL:
        return None
    namespace = backend.namespace(tenant_id)  # a refused id raises here, as on the full path
    if backend.version_rows(tenant_id) != (chain.head,):
        return None
    result = TenantResult(tenant_id, namespace, Action.SKIPPED, chain.head, chain.head, ALREADY_AT_TARGET)
    result.warnings.extend(backend.warnings_for(tenant_id))
    return result

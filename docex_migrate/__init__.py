"""docex-migrate: one Alembic revision chain for the DocEX tenant schema, applied to every tenant.

The public names are imported on first use (PEP 562): a ``--jobs`` worker imports only what it
runs (executors, backends, runner), not the whole API, which halves what a worker costs to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import (
        ReadyTenants,
        adopt,
        deprovision,
        downgrade,
        ensure_tenant,
        list_tenants,
        provision,
        runs,
        status,
        undo,
        upgrade,
        verify,
    )
    from .config import Settings, load_settings
    from .errors import DocexMigrateError
    from .results import Action, TenantResult
    from .states import State, TenantStatus

_WHERE = {
    "adopt": "api",
    "deprovision": "api",
    "downgrade": "api",
    "ensure_tenant": "api",
    "ReadyTenants": "api",
    "list_tenants": "api",
    "provision": "api",
    "status": "api",
    "upgrade": "api",
    "runs": "api",
    "undo": "api",
    "verify": "api",
    "Settings": "config",
    "load_settings": "config",
    "DocexMigrateError": "errors",
    "Action": "results",
    "TenantResult": "results",
    "State": "states",
    "TenantStatus": "states",
}
__all__ = [
    "Action",
    "DocexMigrateError",
    "ReadyTenants",
    "Settings",
    "State",
    "TenantResult",
    "TenantStatus",
    "adopt",
    "deprovision",
    "downgrade",
    "ensure_tenant",
    "list_tenants",
    "load_settings",
    "provision",
    "runs",
    "status",
    "undo",
    "upgrade",
    "verify",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value

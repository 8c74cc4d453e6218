"""docex-migrate: one Alembic revision chain for the DocEX tenant schema, applied to every tenant."""

from .api import (
    adopt,
    deprovision,
    downgrade,
    ensure_tenant,
    list_tenants,
    provision,
    status,
    upgrade,
)
from .config import Settings, load_settings
from .errors import DocexMigrateError
from .results import Action, TenantResult
from .states import State, TenantStatus

__all__ = [
    "Action",
    "DocexMigrateError",
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
    "status",
    "upgrade",
]
__version__ = "0.1.0"

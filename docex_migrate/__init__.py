"""docex-migrate: one Alembic revision chain for the DocEX tenant schema, applied to every tenant."""

from .api import (
    TenantStatus,
    downgrade,
    ensure_tenant,
    list_tenants,
    provision,
    status,
    upgrade,
)
from .config import Settings, load_settings
from .errors import DocexMigrateError
from .runner import TenantResult

__all__ = [
    "DocexMigrateError", "Settings", "TenantResult", "TenantStatus", "downgrade", "ensure_tenant",
    "list_tenants", "load_settings", "provision", "status", "upgrade",
]
__version__ = "0.1.0"

"""Which tenants a command works on: named ones (validated before any I/O), every tenant found,
and a stable shard of them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from .backends import Backend
from .errors import UsageError


def validated(backend: Backend, tenant_ids: Iterable[str]) -> dict[str, str]:
    """tenant id -> namespace for every id (duplicates once), raising for the first refused one
    before any I/O."""
    return {t: backend.namespace(t) for t in dict.fromkeys(tenant_ids)}


def select(backend: Backend, tenant_ids: Sequence[str] | None) -> dict[str, str]:
    """The tenants named, or every tenant found when ``tenant_ids`` is None."""
    if tenant_ids is None:
        return validated(backend, backend.discover())
    if not tenant_ids:
        raise UsageError("name at least one tenant (--tenant ID) or pass --all-tenants")
    return validated(backend, tenant_ids)


def _key(tenant_id: str) -> int:
    return int(hashlib.sha256(tenant_id.encode()).hexdigest(), 16)


def hash_order(tenant_ids: Sequence[str]) -> list[str]:
    """The tenants in the stable order of their hash: what --shard splits and --waves follows."""
    return sorted(tenant_ids, key=_key)


def in_shard(namespaces: dict[str, str], shard: tuple[int, int] | None) -> dict[str, str]:
    """The tenants of shard K of N (0 <= K < N): a stable hash of the tenant id, the same on
    every machine and run, so N jobs (a Kubernetes indexed Job, a CI matrix) split a fleet."""
    if shard is None:
        return namespaces
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise UsageError(f"--shard {index}/{count}: use K/N with 0 <= K < N, e.g. 0/4")
    return {t: ns for t, ns in namespaces.items() if _key(t) % count == index}

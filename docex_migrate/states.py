"""A tenant's state, read from its namespace without Alembic, and what a run must do with it.

The state machine: ``state_of`` names where a tenant is relative to the chain; ``plan`` decides,
before any transaction, whether a tenant is skipped, refused or handed to Alembic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .advice import command
from .backends import NamespaceState
from .chain import Chain
from .config import Settings
from .results import ALREADY_AT_TARGET, Action, TenantResult


class State(str, Enum):
    CURRENT = "current"  # at head
    BEHIND = "behind"  # an older revision of the chain, or base
    AHEAD = "ahead"  # a revision this chain does not know
    CORRUPT = "corrupt"  # more than one row in alembic_version: the linear chain keeps exactly one
    UNVERSIONED = "unversioned"  # no alembic_version: DocEX created it itself
    MISSING = "missing"  # no namespace
    UNREADABLE = "unreadable"  # exists but cannot be read (corrupt file, no privilege): that tenant's failure

    def __str__(self) -> str:
        return self.value


NEEDS_A_PERSON = frozenset({State.CORRUPT, State.UNREADABLE})  # no command can migrate these as they are


@dataclass(frozen=True)
class TenantStatus:
    tenant_id: str
    namespace: str
    revision: str | None
    state: State
    matches: str | None = None  # unversioned only: the revision adopt would stamp
    nearest: str | None = None  # unversioned, adopt refused: the revision it differs least from
    adopt: str | None = None  # unversioned only: adopt (exact), repair (indexes), refuse, or unknown
    error: str | None = None  # unreadable: why; unversioned with adopt unknown: why recognition could not run

    @property
    def failed(self) -> bool:
        return self.state in NEEDS_A_PERSON

    def as_dict(self) -> dict[str, object]:
        row: dict[str, object] = {
            "tenant_id": self.tenant_id,
            "namespace": self.namespace,
            "revision": self.revision,
            "state": self.state.value,
        }
        if self.state == State.UNVERSIONED:
            row.update(matches=self.matches, adopt=self.adopt)
            if self.nearest is not None:
                row["nearest"] = self.nearest
        if self.error:
            row["error"] = self.error
        return row


def state_of(chain: Chain, state: NamespaceState) -> tuple[str | None, State]:
    """The tenant's revision (the rows, comma-separated, when corrupt) and its state."""
    if not state.exists:
        return None, State.MISSING
    if state.error:
        return None, State.UNREADABLE
    if not state.versioned:
        return None, State.UNVERSIONED
    if not state.revisions:
        return None, State.BEHIND  # at base: the version table is there, empty
    if len(state.revisions) > 1:
        return ",".join(state.revisions), State.CORRUPT
    revision = state.revisions[0]
    if revision == chain.head:
        return revision, State.CURRENT
    return revision, State.BEHIND if chain.knows(revision) else State.AHEAD


def why_not_migratable(state: NamespaceState) -> str:
    """The message for a corrupt or unreadable tenant: what is wrong and how to fix it."""
    if state.error:
        return state.error
    return (
        f"has {len(state.revisions)} rows in alembic_version ({', '.join(state.revisions)}): "
        "a corrupt or branched version table; fix it by hand to one row"
    )


def plan(
    chain: Chain,
    tenant_id: str,
    namespace: str,
    state: NamespaceState,
    target: str | None,
    *,
    downgrade: bool,
    settings: Settings,
) -> TenantResult | None:
    """A finished result when this tenant needs no Alembic run (skipped or refused), else None
    (``settings``: for the commands its message names)."""
    revision, kind = state_of(chain, state)
    result = TenantResult(tenant_id, namespace, Action.FAILED, revision, revision)
    if kind == State.MISSING:
        result.message = f"does not exist: run `{command(settings, 'provision', tenant_id)}` first"
    elif kind in NEEDS_A_PERSON:
        result.message = why_not_migratable(state)
    elif kind == State.UNVERSIONED and state.table_count:
        result.action = Action.NEEDS_ADOPT
        result.message = (
            f"has {state.table_count} tables but no alembic_version (created by DocEX itself): "
            f"run `{command(settings, 'adopt', tenant_id)}`, or upgrade with --adopt"
        )
    elif kind == State.AHEAD:
        result.message = f"is at revision {revision}, which this chain does not know: use a newer docex-migrate"
    else:
        here, there = chain.position(revision), chain.position(target)
        if not ((here <= there) if downgrade else (here >= there)):
            return None
        result.action, result.message = Action.SKIPPED, ALREADY_AT_TARGET
    return result

"""squawk's configuration for the lint check: the one place where rules are switched off for
every revision, each with the reason it cannot apply to a revision docex-migrate runs.

Every other squawk rule stays on. A revision that must break one opts out in its own file,
with a reason: ``squawk_ignore = {"rule-name": "why this is safe"}``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

OFF_FOR_EVERY_REVISION: dict[str, str] = {
    # docex-migrate runs each tenant's revisions in one transaction that begins with
    # SET LOCAL lock_timeout and statement_timeout ([migration] timeouts): the file need not.
    "require-lock-timeout": "docex-migrate sets lock_timeout (SET LOCAL) in every tenant transaction",
    "require-statement-timeout": "docex-migrate sets statement_timeout (SET LOCAL) in every tenant transaction",
    # CONCURRENTLY cannot run inside a transaction, and every tenant is migrated in one (an
    # error halfway leaves the tenant at its old revision); the tool refuses such a revision
    # (ban-concurrent-index-creation-in-transaction, still on, catches one). The lock is taken
    # on one tenant's table at a time and bounded by lock_timeout.
    "require-concurrent-index-creation": "revisions run inside the tenant's transaction, where CONCURRENTLY cannot",
    "require-concurrent-index-deletion": "revisions run inside the tenant's transaction, where CONCURRENTLY cannot",
    # The tenant schema is DocEX's: its models declare naive DateTime, String(n) and Integer
    # columns, and the head must equal DocEX's own schema, so new columns follow the models.
    "prefer-timestamp-tz": "DocEX's models declare naive timestamps (TIMESTAMP WITHOUT TIME ZONE)",
    "prefer-text-field": "DocEX's models declare VARCHAR(n) columns; narrowing one is changing-column-type, still on",
    "prefer-bigint-over-int": "DocEX's models declare INTEGER columns; ids are 36-character strings, not sequences",
    "prefer-bigint-over-smallint": "DocEX's models declare the integer widths the schema must match",
}


def arguments(revision_opt_outs: Iterable[str]) -> list[str]:
    """squawk's arguments beside the SQL's file name: the tool's rules off, and the revision's.

    ``--config`` names an empty file so that a .squawk.toml in the working directory (or
    above) changes nothing: the check is the same in every pipeline."""
    rules = dict.fromkeys([*OFF_FOR_EVERY_REVISION, *revision_opt_outs])
    return ["--assume-in-transaction", f"--config={os.devnull}", "--exclude=" + ",".join(rules)]

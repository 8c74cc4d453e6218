"""The `docex-compat` check: the head of the chain is the tenant schema of the newest DocEX
release the package ships against (its own dumps, in docex_migrate/reference/), on the backend
the check runs on.

Everything DocEX has must be at head exactly as DocEX creates it (tables, columns with type,
nullability and default, keys, unique constraints, indexes): a renamed or retyped column, a
dropped index or a changed or dropped default fails, whatever schema.py and the other checks say.
Objects added beyond DocEX's schema pass when DocEX cannot notice them (a new table, a nullable
or defaulted column, a default where DocEX has none, a non-unique index) and fail when they would reject DocEX's own writes
(a NOT NULL column without a default, a new unique index or constraint, a new foreign key).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from .backends import Backend, open_backend
from .checks import CheckFailed, Context
from .config import Settings
from .runner import migrate_tenant
from .scratch import namespace_snapshot

DOCEX_RELEASE = "2.9.10"
REFERENCE_FILES = {
    "sqlite": f"docex-{DOCEX_RELEASE}-tenant.sqlite.sql",
    "postgresql": f"docex-{DOCEX_RELEASE}-tenant.pg.sql",
}
_DUMP_SCHEMA = "tenant_acme_corp"  # the schema the PostgreSQL dump was taken from


def reference_statements(kind: str) -> list[str]:
    """DocEX's DDL for a tenant, unqualified (the tenant's transaction scopes it), one statement each."""
    text = resources.files("docex_migrate").joinpath("reference").joinpath(REFERENCE_FILES[kind]).read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    body = body.replace(f"CREATE SCHEMA {_DUMP_SCHEMA};", "").replace(f"{_DUMP_SCHEMA}.", "")
    return [s.strip() for s in body.split(";") if s.strip()]


def docex_snapshot(backend: Backend, tenant_id: str) -> dict[str, Any]:
    """The catalog snapshot of a namespace made by DocEX's own DDL."""
    with backend.transaction(tenant_id, create=True) as connection:
        for statement in reference_statements(backend.kind):
            connection.exec_driver_sql(statement)
    return namespace_snapshot(backend, tenant_id)


def _added_column_problem(table: str, column: str, spec: dict[str, Any]) -> str | None:
    if spec.get("nullable") or spec.get("default") is not None:
        return None
    return f"{table}.{column} is NOT NULL without a default: DocEX's inserts do not set it"


def _only_a_default_added(want: dict[str, Any], have: dict[str, Any]) -> bool:
    """A server default where DocEX has none: DocEX writes the column itself or leaves it to the
    database, and a default can only make such a write succeed (it never rejects one)."""
    return want.get("default") is None and have.get("default") is not None and {**have, "default": None} == want


def compare(docex: dict[str, Any], head: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what breaks DocEX, what head adds that DocEX cannot notice)."""
    problems: list[str] = []
    additions: list[str] = []
    tables, head_tables = docex.get("tables", {}), head.get("tables", {})
    for name in sorted(set(head_tables) - set(tables)):
        additions.append(f"table {name}")
    for name in sorted(tables):
        ours, theirs = head_tables.get(name), tables[name]
        if ours is None:
            problems.append(f"table {name} is missing at head")
            continue
        for column in sorted(set(theirs["columns"]) | set(ours["columns"])):
            want, have = theirs["columns"].get(column), ours["columns"].get(column)
            if have is None:
                problems.append(f"{name}.{column} is missing at head (DocEX {DOCEX_RELEASE} has {want})")
            elif want is None:
                problem = _added_column_problem(name, column, have)
                problems += [problem] if problem else []
                additions += [] if problem else [f"column {name}.{column}"]
            elif want != have and _only_a_default_added(want, have):
                additions.append(f"default of {name}.{column}")
            elif want != have:
                problems.append(f"{name}.{column}: DocEX {DOCEX_RELEASE} has {want}, head has {have}")
        for index in sorted(set(theirs.get("indexes", {})) | set(ours.get("indexes", {}))):
            want, have = theirs.get("indexes", {}).get(index), ours.get("indexes", {}).get(index)
            if have is None:
                problems.append(f"index {name}.{index} is missing at head (DocEX {DOCEX_RELEASE} has {want})")
            elif want is None:
                if have.get("unique"):
                    problems.append(f"index {name}.{index} is unique: it can reject DocEX's writes")
                else:
                    additions.append(f"index {name}.{index}")
            elif want != have:
                problems.append(f"index {name}.{index}: DocEX {DOCEX_RELEASE} has {want}, head has {have}")
        for key in sorted((set(theirs) | set(ours)) - {"columns", "indexes"}):
            if theirs.get(key) != ours.get(key):
                problems.append(f"{name} {key}: DocEX {DOCEX_RELEASE} has {theirs.get(key)}, head has {ours.get(key)}")
    for key in sorted((set(docex) | set(head)) - {"tables"}):  # PostgreSQL enum types, sequences
        want, have = docex.get(key) or {}, head.get(key) or {}
        for item in sorted(set(want) | set(have), key=str):
            if item not in have:
                problems.append(f"{key} {item} is missing at head")
            elif item not in want:
                additions.append(f"{key} {item}")
            elif want[item] != have[item]:
                problems.append(f"{key} {item}: DocEX {DOCEX_RELEASE} has {want[item]}, head has {have[item]}")
    return problems, additions


def check_docex_compat(ctx: Context, scratch: Settings) -> str:
    with open_backend(scratch) as backend:
        migrate_tenant(backend, "compat_head", ctx.chain.head, create=True, chain=ctx.chain)
        head = namespace_snapshot(backend, "compat_head")
        docex = docex_snapshot(backend, "compat_docex")
        kind = backend.kind
    problems, additions = compare(docex, head)
    if problems:
        raise CheckFailed(
            f"DocEX {DOCEX_RELEASE} cannot use a tenant at head ({ctx.chain.head}) on {kind}: "
            "its tables must stay as DocEX creates them",
            problems,
        )
    if additions:
        return f"head has DocEX {DOCEX_RELEASE}'s tenant schema, plus what DocEX ignores: {', '.join(additions)}"
    return f"head is exactly DocEX {DOCEX_RELEASE}'s tenant schema"

"""Tenant id rules and the namespace names DocEX derives from them. Pure: no I/O.

DocEX derives a tenant's namespace with plain ``str.format(tenant_id=...)`` on the configured
template and never sanitises it, so everything here refuses what DocEX would silently accept
but turn into an injection, a path escape, a reserved schema or a truncated identifier.
"""

from __future__ import annotations

import functools
import os
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from .errors import ConfigError, InvalidTenantError

# DocEX's guide uses ids like ``acme-corp``, ``customer-123`` and ``acme_corp``. The same rule
# holds on every backend, so a tenant id never becomes valid or invalid by switching databases.
TENANT_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
TENANT_ID_RULE = (
    "ASCII lower-case letters, digits, '-' and '_', starting with a letter or digit, "
    "at most 63 characters (e.g. acme-corp, customer-123)"
)
PLACEHOLDER = "{tenant_id}"
POSTGRES_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL silently truncates longer names (NAMEDATALEN-1)

# Characters a rendered schema name may hold. A quoted identifier could hold more, but nothing
# outside this set is needed and everything outside it is a way to break out of the quotes.
_SCHEMA_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_DOCEX_RUNTIME_SCHEMA_CHARS = re.compile(r"[A-Za-z0-9_]+")
# Fixed parts of a SQLite path template: no quotes, ';', whitespace, URI syntax ('?', '#', '%').
_PATH_TEMPLATE_CHARS = re.compile(r"[A-Za-z0-9_./{}-]+")
# The run ledger (ledger.py) lives beside the tenants: its schema and file are never a tenant's.
LEDGER_SCHEMA = "docex_migrate"
LEDGER_FILE = "docex_migrate_runs.db"
_LEDGER_FILES = tuple(LEDGER_FILE + suffix for suffix in ("", "-journal", "-wal", "-shm"))
_RESERVED_SCHEMAS = {"public", "information_schema", "docex_system", LEDGER_SCHEMA}
_PROBES = ("probe-a1", "probe-b2")  # two valid ids, to prove a template depends on the id


def validate_tenant_id(tenant_id: str) -> str:
    """Return ``tenant_id`` unchanged if it is valid, else raise InvalidTenantError."""
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidTenantError(f"invalid tenant id {tenant_id!r}: use {TENANT_ID_RULE}")
    return tenant_id


def _check_template(template: str, key: str) -> None:
    """A template must hold {tenant_id} as a plain field, and no other braces.

    DocEX formats it with str.format: '{{tenant_id}}' is the literal text '{tenant_id}' (every
    tenant would share one namespace), and '!r', ':spec', '[i]' or '.attr' change the name DocEX
    derives in ways nothing here could check. So only the plain field is allowed.
    """
    if not isinstance(template, str):
        raise ConfigError(f"{key} must be a string like {PLACEHOLDER!r}, not {type(template).__name__}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{key} {template!r} is not a valid template ({exc}); use e.g. {PLACEHOLDER}") from None
    literal = "".join(text for text, _, _, _ in parsed)
    fields = [(name, spec, conversion) for _, name, spec, conversion in parsed if name is not None]
    if not fields or "{" in literal or "}" in literal or any(f != ("tenant_id", "", None) for f in fields):
        raise ConfigError(
            f"{key} {template!r} must contain a plain {PLACEHOLDER} field and no other braces "
            f"(no '{{{{...}}}}', '!r', ':spec', '[index]' or '.attribute')"
        )


def _require_per_tenant(template: str, key: str, render: Callable[[str], str]) -> None:
    """Two tenants must get two namespaces, each holding its id: else every tenant is one."""
    first, second = (render(probe) for probe in _PROBES)
    if first == second or _PROBES[0] not in first:
        raise ConfigError(f"{key} {template!r} gives every tenant the same namespace {first!r}: the tenant id must stay in it")


def validate_schema_template(template: str) -> None:
    _check_template(template, "database.postgres.schema_template")
    fixed = template.replace(PLACEHOLDER, "")
    if fixed and not _SCHEMA_CHARS.fullmatch(fixed):
        raise ConfigError(
            f"database.postgres.schema_template {template!r} may only hold letters, digits, '_' and '-' around {PLACEHOLDER}"
        )
    _require_per_tenant(template, "database.postgres.schema_template", lambda t: template.format(tenant_id=t))


def validate_path_template(template: str) -> None:
    _check_template(template, "database.sqlite.path_template")
    if not _PATH_TEMPLATE_CHARS.fullmatch(template):
        raise ConfigError(
            f"database.sqlite.path_template {template!r} may only hold letters, digits, '_', '-', '.' "
            f"and '/' around {PLACEHOLDER}"
        )
    # With valid ids only the template itself can escape, e.g. 'storage/{tenant_id}/../../x.db'.
    sqlite_path(template, _PROBES[0])
    # ... or drop the id again: 'storage/{tenant_id}/../x.db' is one file for every tenant.
    _require_per_tenant(template, "database.sqlite.path_template", lambda t: os.path.normpath(sqlite_path(template, t)))


def schema_name(template: str, tenant_id: str) -> str:
    """The PostgreSQL schema of a tenant, exactly as DocEX derives it."""
    validate_tenant_id(tenant_id)
    name = template.format(tenant_id=tenant_id)
    if not name or not _SCHEMA_CHARS.fullmatch(name):
        raise InvalidTenantError(f"tenant {tenant_id!r} gives schema name {name!r}, which is not a plain identifier")
    if len(name.encode()) > POSTGRES_MAX_IDENTIFIER_BYTES:
        raise InvalidTenantError(
            f"tenant {tenant_id!r} gives schema name {name!r} of {len(name.encode())} bytes; PostgreSQL "
            f"truncates names over {POSTGRES_MAX_IDENTIFIER_BYTES} bytes: use a shorter tenant id"
        )
    lowered = name.lower()
    if lowered in _RESERVED_SCHEMAS or lowered.startswith("pg_") or re.fullmatch(r"_docex_.*_", lowered):
        raise InvalidTenantError(
            f"tenant {tenant_id!r} gives schema name {name!r}, which is reserved "
            f"(public, information_schema, pg_*, docex_system, _docex_*_, {LEDGER_SCHEMA}): choose another tenant id"
        )
    return name


def docex_postgres_runtime_accepts(name: str) -> bool:
    """DocEX 2.8.7+ refuses, at connect time, schema names with anything but letters, digits and '_'."""
    return bool(_DOCEX_RUNTIME_SCHEMA_CHARS.fullmatch(name))


def fixed_directory(template: str) -> str:
    """The template's fixed leading directory ('storage/' for the default), '' if none."""
    head = template.split(PLACEHOLDER, 1)[0]
    return head[: head.rfind("/") + 1]


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` names something strictly below the directory ``root`` ('' is the working
    directory), compared after normalising both: './x.db' is inside './', '../../x' is not inside '../'."""
    relative = os.path.relpath(os.path.normpath(path), os.path.normpath(root or os.curdir))
    return relative != os.curdir and relative != os.pardir and not relative.startswith(os.pardir + os.sep)


@functools.lru_cache(maxsize=65536)  # asked several times per tenant; pure (raises are not cached)
def sqlite_path(template: str, tenant_id: str) -> str:
    """The SQLite file of a tenant, exactly as DocEX derives it (relative to the working directory)."""
    validate_tenant_id(tenant_id)
    path = template.format(tenant_id=tenant_id)
    root = fixed_directory(template)
    if not _inside(path, root):
        raise InvalidTenantError(
            f"tenant {tenant_id!r} gives SQLite path {path!r}, which leaves the template's directory "
            f"{root or './'!r}: fix database.sqlite.path_template"
        )
    if os.path.normpath(path) in {os.path.normpath(os.path.join(root, name)) for name in _LEDGER_FILES}:
        raise InvalidTenantError(
            f"tenant {tenant_id!r} gives SQLite path {path!r}, which is the run ledger's: choose another tenant id"
        )
    return path


def ledger_file(template: str) -> str:
    """The run ledger's SQLite file: in the template's fixed directory, beside the tenants."""
    return os.path.join(fixed_directory(template), LEDGER_FILE)


@dataclass(frozen=True)
class TemplateMatcher:
    """Recognises the namespaces a template produces, to discover tenants from the database."""

    template: str

    @cached_property  # discovery matches every namespace in the database against it
    def regex(self) -> re.Pattern[str]:
        parts = [re.escape(p) for p in self.template.split(PLACEHOLDER)]
        first, *rest = parts
        pattern = first + "".join(
            ("(?P<tenant_id>[a-z0-9][a-z0-9_-]*)" if i == 0 else "(?P=tenant_id)") + part for i, part in enumerate(rest)
        )
        return re.compile(pattern)

    def tenant_id(self, namespace: str) -> str | None:
        """The tenant id a namespace belongs to, or None if the namespace is not a tenant's."""
        match = self.regex.fullmatch(namespace)
        if not match or not TENANT_ID_PATTERN.fullmatch(match["tenant_id"]):
            return None
        return match["tenant_id"]

    def like_pattern(self) -> str:
        """A SQL LIKE pattern (escape character '\\') that every produced name matches.

        '_' and '%' in the fixed parts are escaped: '_' is a LIKE wildcard, and 'tenant_x' must
        not match 'tenantAx'. The regex still has the final word.
        """
        escaped = [p.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") for p in self.template.split(PLACEHOLDER)]
        return "%".join(escaped)

    def glob_pattern(self) -> str:
        return self.template.replace(PLACEHOLDER, "*")

"""Drift excuses: indexes a team added on purpose (a hotfix during an incident), declared in
DocEX's config file so that `verify` lists them as excused instead of flagging drift forever,
and `verify --repair` never drops them (as Atlas's exclude does for its diffs)::

    docex_migrate:
      excused_drift:
        - index: ix_document_hotfix_search    # the index's name, as the database has it
          table: document                     # optional: only on this table
          reason: INC-1234, search timed out  # required: why it is there

An excuse covers an extra index only, on every tenant that has it: an index no revision of the
chain defines. An index the revision defines, changed under its own name, stays drift; so does
everything else (columns, types, tables). Parsed with the settings (config.py), so a malformed
entry is refused before anything runs (a name YAML reads as a number, an index given twice); once
the chain's snapshots are known, ``check`` refuses an excuse whose name any revision of the chain
gives one of its own objects (tenants sit at different revisions, and a name is one namespace per
tenant: an excused index holding it would keep `verify --repair` from creating the revision's),
and a table that no revision has (a typo). Applied to a tenant's snapshot before it is compared
(drift.py). Pure: no I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

SECTION = "docex_migrate"
KEY = "excused_drift"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}")  # an index or table name (PostgreSQL's 63 bytes)
_FIELDS = {"index", "table", "reason"}
# What YAML 1.2 readers take for a number among the names above (PyYAML, YAML 1.1, reads 1e3 as
# the string '1e3'; DocEX's other tools and YAML 1.2 read it as 1000.0): refused as a name.
_NUMBER = re.compile(r"[0-9]+([eE]-?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class Excuse:
    index: str
    table: str | None
    reason: str

    def covers(self, table: str, index: str) -> bool:
        return index == self.index and self.table in (None, table)

    def describe(self, table: str) -> str:
        return f"extra index {self.index} on {table} (excused: {self.reason})"


def parse(section: Any) -> tuple[Excuse, ...]:
    """The ``docex_migrate:`` section's excuses; ConfigError (exit 2, one line) for a bad one."""
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise ConfigError(f"{SECTION} must be a mapping (with {KEY}: a list), not {type(section).__name__}")
    unknown = sorted(set(map(str, section)) - {KEY})
    if unknown:
        raise ConfigError(f"{SECTION}.{unknown[0]} is not a docex-migrate setting: the section holds {KEY} only")
    entries = section.get(KEY) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{SECTION}.{KEY} must be a list of entries (index:, table:, reason:)")
    found: list[Excuse] = []
    for number, entry in enumerate(entries, 1):
        where = f"{SECTION}.{KEY} entry {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping with index: and reason: (table: optional), not {entry!r}")
        extra = sorted(set(map(str, entry)) - _FIELDS)
        if extra:
            raise ConfigError(f"{where}: {extra[0]!r} is not one of index, table, reason (only indexes can be excused)")
        index, table, reason = entry.get("index"), entry.get("table"), entry.get("reason")
        for field, value in (("index", index), ("table", table)):
            if isinstance(value, str) and _NUMBER.fullmatch(value):
                raise ConfigError(
                    f"{where}: {field} {value} reads as a number in YAML, not a name: give the {field}'s name "
                    "as the database has it"
                )
            if (value is not None or field == "index") and not (isinstance(value, str) and _NAME.fullmatch(value)):
                raise ConfigError(
                    f"{where}: {field} must be a name as the database has it (letters, digits, _, $, -; at most 63), "
                    f"not {value!r}"
                )
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(f"{where} ({index}): give a reason: why the index is there (an incident, a ticket)")
        excuse = Excuse(str(index), table, reason.strip())
        if any((e.index, e.table) == (excuse.index, excuse.table) for e in found):
            raise ConfigError(f"{where}: index {index} is excused twice: keep one entry")
        if any(e.index == excuse.index and None in (e.table, excuse.table) for e in found):
            raise ConfigError(
                f"{where}: index {index} is excused twice, on every table and on one table: keep one entry "
                "(without table: it covers the index on whichever table it is)"
            )
        found.append(excuse)
    return tuple(found)


def check(excuses: tuple[Excuse, ...], snapshots: Mapping[str, Mapping[str, Any]], known_tables: tuple[str, ...] = ()) -> None:
    """ConfigError (exit 2, one line) for the first excuse whose index name a revision of the
    chain gives one of its own objects, at any revision (``snapshots``: revision -> its snapshot),
    or whose table no revision has (nor ``known_tables``). Nothing to check against: nothing refused."""
    if not excuses or not snapshots:
        return
    tables = set(known_tables)
    for revision, snap in snapshots.items():
        tables.update(snap["tables"])
        for number, excuse in enumerate(excuses, 1):
            owner = _owner(snap, excuse.index)
            if owner is not None:
                raise ConfigError(
                    f"{SECTION}.{KEY} entry {number}: {excuse.index} is not an extra index: revision {revision} defines "
                    f"{owner} under that name, and an excuse covers only an index no revision defines: remove the entry"
                )
    for number, excuse in enumerate(excuses, 1):
        if excuse.table is not None and excuse.table not in tables:
            near = difflib.get_close_matches(excuse.table, sorted(tables), n=1)
            hint = f"did you mean {near[0]}?" if near else "name one of " + ", ".join(sorted(tables))
            raise ConfigError(
                f"{SECTION}.{KEY} entry {number} ({excuse.index}): table {excuse.table} is not a DocEX tenant table "
                f"({hint}), or leave table: out"
            )


def _owner(snap: Mapping[str, Any], name: str) -> str | None:
    """What of the snapshot's holds ``name`` in the tenant's namespace of indexes and tables
    (an index, a table, a key's or a unique constraint's index, a sequence), or None. Case
    blind: SQLite takes IX_A and ix_a for one name."""

    def same(other: object) -> bool:
        return isinstance(other, str) and other.lower() == name.lower()

    for table, body in snap["tables"].items():
        if same(table):
            return f"the table {table}"
        index = next((i for i in body.get("indexes", {}) if same(i)), None)
        if index is not None:
            return f"the index {index} on {table}"
        if same((body.get("primary_key") or {}).get("name")):
            return f"the primary key of {table}"
        unique = next((u[0] for u in body.get("unique_constraints", []) if u and same(u[0])), None)
        if unique is not None:
            return f"the unique constraint {unique} on {table}"
    sequence = next((q for q in snap.get("sequences", ()) if same(q)), None)
    return None if sequence is None else f"the sequence {sequence}"


def apply(excuses: tuple[Excuse, ...], expected: dict[str, Any], actual: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``actual`` without the extra indexes an excuse covers (those ``expected``, the revision's
    snapshot, does not have), and a line for each one left out."""
    if not excuses:
        return actual, []
    excused: list[str] = []
    tables = dict(actual["tables"])
    for table, body in actual["tables"].items():
        defined = expected["tables"].get(table, {}).get("indexes", {})
        kept = {}
        for name, definition in body["indexes"].items():
            excuse = None if name in defined else next((e for e in excuses if e.covers(table, name)), None)
            if excuse is None:
                kept[name] = definition
            else:
                excused.append(excuse.describe(table))
        if len(kept) != len(body["indexes"]):
            tables[table] = {**body, "indexes": kept}
    return {**actual, "tables": tables}, excused

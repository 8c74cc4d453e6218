"""Reading a normalised catalog snapshot of one tenant namespace (see docex_migrate/snapshot.py).

The dialects differ in what their reflection returns, so this lives with the backends.

Tables, columns (type, nullability, server default, comment), primary keys, foreign keys with ON
DELETE, unique constraints, CHECK constraints, indexes, table comments, views, triggers,
PostgreSQL enum types, sequences, functions, procedures and domains (the parts beyond tables:
catalog_objects.py). Column order is left out on purpose: a column added by a revision is
appended on PostgreSQL.

An index is ``{"columns": [[column, "asc" | "desc"], ...], "unique": bool}`` when that is all it
is (a plain b-tree on columns), and carries its ``definition`` too, the rest of its CREATE INDEX
statement after the table name, whenever it is anything more: an expression, a predicate
(partial), INCLUDE columns, a collation, NULLS FIRST/LAST, an operator class, another method,
storage parameters. The definition is the database's own text (PostgreSQL's pg_get_indexdef,
SQLite's stored statement), so no shape the database allows is missed, and an index is
recreated from it exactly (``create_index``). A PostgreSQL index left invalid (a failed CREATE
INDEX CONCURRENTLY) says so. SQLAlchemy's index reflection is not used: it drops SQLite's
expression indexes and loses predicates, collations and INCLUDE. Likewise a PostgreSQL unique
constraint is ``[name, columns]``, plus its definition when it is more (INCLUDE, NULLS NOT
DISTINCT, DEFERRABLE).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..chain import VERSION_TABLE
from .catalog_objects import namespace_parts, table_parts

IGNORED_TABLES = {VERSION_TABLE}
Snapshot = dict[str, Any]  # {"tables": {...}, and on PostgreSQL "enums", "sequences"}


def _ondelete(value: str | None) -> str | None:
    value = (value or "").upper()
    return None if value in ("", "NO ACTION") else value


def _type(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    if isinstance(type_, sa.Enum):  # by name and labels; a schema qualifier depends on search_path
        return f"ENUM {type_.name}({', '.join(type_.enums)})"
    return str(type_.compile(dialect=dialect))


# Every index of the schema's tables that no primary key or unique constraint owns (those are
# the constraints' own), with its key elements in order: a column's name, or for an expression
# its text. ``definition`` is pg_get_indexdef past "CREATE [UNIQUE] INDEX name ON schema.table ";
# its references to the tenant's own objects are unqualified, as the snapshot's search_path is
# the tenant's schema.
_PG_INDEXES = sa.text(r"""
WITH ix AS (
    SELECT x.indexrelid, x.indrelid, x.indkey, x.indoption, x.indnkeyatts, x.indisunique, x.indisvalid,
           t.relname AS table_name, i.relname AS index_name, pg_catalog.pg_get_indexdef(x.indexrelid) AS statement,
           'CREATE ' || CASE WHEN x.indisunique THEN 'UNIQUE ' ELSE '' END || 'INDEX ' || pg_catalog.quote_ident(i.relname)
               || ' ON ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(t.relname) || ' ' AS prefix
    FROM pg_catalog.pg_index x
    JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
    JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
    WHERE n.nspname = coalesce(:schema, current_schema()) AND t.relname = ANY(:tables)
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k
                      WHERE k.conrelid = x.indrelid AND k.conindid = x.indexrelid AND k.contype IN ('p', 'u'))
)
SELECT ix.table_name, ix.index_name, ix.indisunique, ix.indisvalid,
       CASE WHEN left(ix.statement, length(ix.prefix)) = ix.prefix THEN substr(ix.statement, length(ix.prefix) + 1)
            ELSE ix.statement END AS definition,
       array_agg(coalesce(a.attname::text, pg_catalog.pg_get_indexdef(ix.indexrelid, k.n, true)) ORDER BY k.n) AS elements,
       array_agg(pg_catalog.quote_ident(a.attname) ORDER BY k.n) AS quoted,
       array_agg((ix.indoption[k.n - 1] & 1) = 1 ORDER BY k.n) AS descending
FROM ix CROSS JOIN LATERAL generate_series(1, ix.indnkeyatts) k(n)
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = ix.indkey[k.n - 1] AND a.attnum > 0
GROUP BY ix.table_name, ix.index_name, ix.indisunique, ix.indisvalid, ix.statement, ix.prefix
""")


# A unique constraint's definition, and what PostgreSQL prints for a plain one on its columns:
# when they differ (INCLUDE, NULLS NOT DISTINCT, DEFERRABLE...) the snapshot holds the definition.
_PG_UNIQUES = sa.text(r"""
SELECT t.relname, k.conname, pg_catalog.pg_get_constraintdef(k.oid),
       'UNIQUE (' || string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY u.n) || ')'
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class t ON t.oid = k.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY u(attnum, n)
JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
WHERE n.nspname = coalesce(:schema, current_schema()) AND t.relname = ANY(:tables) AND k.contype = 'u'
GROUP BY t.relname, k.conname, k.oid
""")


def _unique_definitions(connection: Connection, schema: str | None, tables: list[str]) -> dict[tuple[str, str], str]:
    """(table, constraint) -> its definition, for the unique constraints that are more than their columns."""
    if not tables or connection.dialect.name != "postgresql":
        return {}
    rows = connection.execute(_PG_UNIQUES, {"schema": schema, "tables": tables}).all()
    return {(table, name): definition for table, name, definition, plain in rows if definition != plain}


def _collation(name: str | None) -> str:
    return f" COLLATE {name}" if name else ""


def _unique(constraint: Any, definition: str | None) -> list[Any]:  # a ReflectedUniqueConstraint
    """[name, columns], and the definition when it is more than that."""
    return [constraint.get("name"), constraint["column_names"], *([definition] if definition else [])]


def _index(columns: list[list[str]], unique: bool, definition: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"columns": columns, "unique": unique}
    if definition is not None:
        entry["definition"] = definition
    return entry


def _order(descending: bool) -> str:
    return "desc" if descending else "asc"


def _pg_indexes(connection: Connection, schema: str | None, tables: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {table: {} for table in tables}
    rows = connection.execute(_PG_INDEXES, {"schema": schema, "tables": tables}).all()
    for table, name, unique, valid, definition, elements, quoted, descending in rows:
        # What PostgreSQL prints for a plain b-tree on these columns: anything else is in the definition.
        plain = (
            None
            if None in quoted
            else f"USING btree ({', '.join(q + (' DESC' if d else '') for q, d in zip(quoted, descending, strict=True))})"
        )
        entry = _index(
            [[e, _order(d)] for e, d in zip(elements, descending, strict=True)],
            unique,
            None if definition == plain else definition,
        )
        if not valid:
            entry["invalid"] = True
        found[table][name] = entry
    return found


def _element_list(statement: str) -> tuple[list[str], str]:
    """A SQLite CREATE INDEX statement's key elements as written (or a CREATE TABLE's columns
    and constraints), and the statement from its element list on ("(a, lower(b)) WHERE c > 0").
    The names before the list may be quoted and hold any character; quoted text and nested
    parentheses inside the list are skipped over."""
    elements: list[str] = []
    rest, start, depth = statement, 0, 0
    closing: str | None = None
    for i, ch in enumerate(statement):
        if closing is not None:
            closing = None if ch == closing else closing
        elif ch in "\"'`[":
            closing = "]" if ch == "[" else ch
        elif ch == "(":
            depth += 1
            if depth == 1:
                rest, start = statement[i:], i + 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                return elements + [statement[start:i].strip()], rest
        elif ch == "," and depth == 1:
            elements.append(statement[start:i].strip())
            start = i + 1
    return elements, statement


def _blanked(text: str) -> str:
    """``text`` with quoted names and strings, and whatever is in parentheses, blanked out (the
    same length): a keyword found in it is one of the statement's own, at its top level."""
    out = []
    closing: str | None = None
    depth = 0
    for ch in text:
        if closing is not None:
            closing = None if ch == closing else closing
        elif ch in "\"'`[":
            closing = "]" if ch == "[" else ch
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(ch)
            continue
        out.append(" ")
    return "".join(out)


_COLLATE = re.compile(r"\bCOLLATE\b", re.IGNORECASE)
# A name as SQLite reads one: "double", `back`, [bracket] or 'single' quoted, or bare.
_SQLITE_NAME = re.compile(r'\s*(?:"((?:[^"]|"")*)"|`((?:[^`]|``)*)`|\[([^\]]*)\]|\'((?:[^\']|\'\')*)\'|(\w+))')


def _sqlite_name(match: re.Match[str]) -> str:
    double, back, bracket, single, bare = match.groups()
    for quoted, quote in ((double, '"'), (back, "`"), (single, "'")):
        if quoted is not None:
            return quoted.replace(quote * 2, quote)
    return str(bracket if bracket is not None else bare)


def _sqlite_column_collations(connection: Connection, tables: list[str]) -> dict[str, dict[str, str]]:
    """table -> column (lower case) -> the collation its definition in CREATE TABLE names, when
    not the default BINARY. SQLite keeps a column's collation nowhere else (PRAGMA table_info
    has none; SQLAlchemy's reflection drops it)."""
    found: dict[str, dict[str, str]] = {table: {} for table in tables}
    for table, create in connection.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'"):
        if table not in found or not create:
            continue
        for element in _element_list(create)[0]:  # column definitions and table constraints
            collate = _COLLATE.search(_blanked(element))  # a table constraint's are in parentheses
            column = _SQLITE_NAME.match(element)
            collation = _SQLITE_NAME.match(element, collate.end()) if collate else None
            if column and collation and _sqlite_name(collation).upper() != "BINARY":
                found[table][_sqlite_name(column).lower()] = _sqlite_name(collation).upper()
    return found


def _sqlite_indexes(connection: Connection, tables: list[str]) -> dict[str, dict[str, Any]]:
    quote = connection.dialect.identifier_preparer.quote
    found: dict[str, dict[str, Any]] = {}
    for table in tables:
        found[table] = {}
        # origin 'c': made by CREATE INDEX (the others are a key's or a unique constraint's own)
        for _, name, unique, origin, partial in connection.exec_driver_sql(f"PRAGMA index_list({quote(table)})"):
            if origin != "c":
                continue
            # index_xinfo: one row per key element (key=1): table column number (-2: an
            # expression), name, DESC, collation
            keys = [row for row in connection.exec_driver_sql(f"PRAGMA index_xinfo({quote(name)})") if row[5]]
            statement = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
            ).scalar_one()
            written, definition = _element_list(statement)
            if len(written) != len(keys):  # not as expected: name each element by the whole definition
                written = [definition] * len(keys)
            columns = [
                [column if cid >= 0 else re.sub(r"\s+(asc|desc)$", "", text, flags=re.IGNORECASE), _order(bool(desc))]
                for (_, cid, column, desc, _, _), text in zip(keys, written, strict=True)
            ]
            plain = not partial and all(cid >= 0 and collation == "BINARY" for _, cid, _, _, collation, _ in keys)
            found[table][name] = _index(columns, bool(unique), None if plain else definition)
    return found


def _indexes(connection: Connection, schema: str | None, tables: list[str]) -> dict[str, dict[str, Any]]:
    """table -> index name -> the index, as the module docstring says."""
    if not tables:
        return {}
    if connection.dialect.name == "postgresql":
        return _pg_indexes(connection, schema, tables)
    return _sqlite_indexes(connection, tables)


def create_index(connection: Connection, table: str, name: str, index: dict[str, Any]) -> str:
    """The statement that creates ``index`` (a snapshot's) exactly, on ``table`` unqualified:
    the search_path (PostgreSQL) or the file (SQLite) decides where."""
    quote = connection.dialect.identifier_preparer.quote
    body = index.get("definition") or "({})".format(
        ", ".join(quote(column) + (" DESC" if order == "desc" else "") for column, order in index["columns"])
    )
    return f"CREATE {'UNIQUE ' if index['unique'] else ''}INDEX {quote(name)} ON {quote(table)} {body}"


def snapshot(connection: Connection, schema: str | None = None) -> Snapshot:
    inspector = sa.inspect(connection)
    dialect = connection.dialect
    names = sorted(set(inspector.get_table_names(schema=schema)) - IGNORED_TABLES)
    # One query per kind for all the tables (what get_columns etc. run per table): on a database
    # holding thousands of tenants each of those queries reads large catalogs.
    by_table: dict[str, dict[str, Any]] = {}
    for kind, method in (
        ("columns", inspector.get_multi_columns),
        ("pk", inspector.get_multi_pk_constraint),
        ("fks", inspector.get_multi_foreign_keys),
        ("uniques", inspector.get_multi_unique_constraints),
    ):
        with warnings.catch_warnings():
            # SQLite's unique constraints are read through its index reflection, which warns of
            # the indexes it cannot read; _indexes reads them all.
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index", sa.exc.SAWarning)
            warnings.filterwarnings("ignore", "Failed to look up filter predicate of partial index", sa.exc.SAWarning)
            found = method(schema=schema, filter_names=names) if names else {}
        by_table[kind] = {key[1]: value for key, value in found.items()}
    by_table["indexes"] = _indexes(connection, schema, names)
    unique_definitions = _unique_definitions(connection, schema, names)
    # PostgreSQL's column types carry their collation already ('TEXT COLLATE "C"')
    collations = _sqlite_column_collations(connection, names) if dialect.name == "sqlite" else {}
    parts = table_parts(inspector, schema, names)  # CHECK constraints, comments (catalog_objects.py)
    tables: dict[str, Any] = {}
    for table in names:
        columns = {
            c["name"]: {
                "type": _type(c["type"], dialect) + _collation(collations.get(table, {}).get(c["name"].lower())),
                "nullable": bool(c["nullable"]),
                "default": c.get("default"),
                **({"comment": c["comment"]} if c.get("comment") is not None else {}),
            }
            for c in by_table["columns"][table]
        }
        pk = by_table["pk"][table]
        foreign_keys = sorted(
            [
                fk.get("name"),
                fk["constrained_columns"],
                fk["referred_table"],
                fk["referred_columns"],
                _ondelete((fk.get("options") or {}).get("ondelete")),
            ]
            for fk in by_table["fks"][table]
        )
        uniques = sorted(_unique(u, unique_definitions.get((table, u.get("name")))) for u in by_table["uniques"][table])
        tables[table] = {
            "columns": columns,
            "primary_key": {"name": pk.get("name"), "columns": pk["constrained_columns"]},
            "foreign_keys": foreign_keys,
            "unique_constraints": uniques,
            "indexes": by_table["indexes"][table],
            **parts.get(table, {}),
        }
    result: Snapshot = {"tables": tables, **namespace_parts(connection, inspector, schema)}
    if dialect.name == "postgresql":
        result["enums"] = sorted([e["name"], list(e["labels"])] for e in inspector.get_enums(schema=schema))  # type: ignore[attr-defined]  # PGInspector
        result["sequences"] = sorted(inspector.get_sequence_names(schema=schema))
    return result


def empty_snapshot(dialect_name: str) -> Snapshot:
    """What a namespace at base (an empty alembic_version) holds: nothing, as ``snapshot`` says it."""
    return {"tables": {}, "enums": [], "sequences": []} if dialect_name == "postgresql" else {"tables": {}}

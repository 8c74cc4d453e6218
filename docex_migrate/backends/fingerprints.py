"""Catalog fingerprints: one hash per tenant namespace, read in bulk, for `verify`.

A fingerprint is SOUND for the normalised snapshot (snapshot.py): two namespaces with the same
fingerprint have the same snapshot. It may cover more than the snapshot (that only splits
groups of identical tenants, never merges different ones), never less. So `verify` takes the
full snapshot of one tenant per (revision, fingerprint) and the verdict holds for the group.

PostgreSQL: one catalog query per batch of schemas (pg_catalog only, no tenant table is read).
Every name comes from the catalog as it is (never from deparsed text), with one exception made
exact: a reference to an object of the tenant's own schema is written ``@`` instead of the
schema's name, which is what makes identical tenants hash alike. Columns carry their number, and
keys and indexes name their columns by number (no lookups per row): so column order splits
groups too (more groups, never a wrong verdict). Deparsed text appears in two
places: types (format_type, whose output starts with the quoted schema exactly when the type is
the tenant's own, so the prefix is replaced) and expressions (column and domain defaults). An
expression whose text mentions the tenant's own schema (``tenant_a.``, as a reference or inside
a literal) or calls nextval (SQLAlchemy qualifies the sequence with the tenant's schema) keeps
the tenant's name: such a tenant is a group of its own, compared on its own. Every other
expression deparses the same under the tenant's search_path (what the snapshot sees) as under
``pg_catalog`` (what this query uses), so its text is taken as it is.

An index is hashed from what pg_get_indexdef (the snapshot's definition) deparses, not from its
text: its pg_index row (key columns by number, INCLUDE, options, operator classes, collations,
uniqueness, NULLS NOT DISTINCT, and its expressions and predicate as stored node trees, whose
":location" offsets into the creating statement are dropped), its access method and its storage
parameters. The definition is a function of these and of the names of what they reference by
oid: columns (in the 'a' items), and functions, types, operator classes and collations, which
either are shared by every tenant (the same oid, the same name) or are the tenant's own (an oid
of its own: a group of its own). pg_get_indexdef cost ~0.15 ms an index, cold: most of verify.

SQLite: the file's own schema is its sqlite_master (type, name, table, SQL text): hashed as it
is, alembic_version excepted. Two files with the same rows have the same schema. (Read with the
file's state by sqlite/files.py, as PostgreSQL's by postgresql/catalog_reads.py.)
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from .catalog_paths import owned, relations

# Items are ROW(...)::text: PostgreSQL's record output quotes every field that needs it and
# writes NULL as nothing, so the text of an item is unambiguous. Sorted in "C" order, hashed.
PG_FINGERPRINTS = sa.text(
    r"""
WITH ns AS (  -- each schema by name (OFFSET 0: a lookup per name), never a pass over every schema
    SELECT n.oid, n.nspname, quote_ident(n.nspname) || '.' AS q
    FROM unnest(CAST(:schemas AS name[])) s(name)
    CROSS JOIN LATERAL (SELECT * FROM pg_catalog.pg_namespace n WHERE n.nspname = s.name OFFSET 0) n
), rel AS (  -- by oid (PG_RELATIONS), so every lookup below is an index lookup, not a catalog scan
    SELECT c.oid, c.relname, c.relkind, c.relam, n.oid AS nsoid, n.nspname, quote_ident(n.nspname) || '.' AS q
    FROM unnest(CAST(:relations AS oid[])) u(oid) JOIN pg_catalog.pg_class c ON c.oid = u.oid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c') AND c.relname <> :version_table
), typ AS MATERIALIZED (  -- the schemas' enum and domain types: through pg_depend, then by oid (catalog_paths.py)
    SELECT t.oid, t.typname, t.typtype, t.typbasetype, t.typtypmod, t.typnotnull, t.typcollation, t.typndims,
           t.typdefault, ns.oid AS nsoid, ns.nspname, ns.q
    FROM ns CROSS JOIN LATERAL ("""
    + owned("pg_type", "ns.oid")
    + r""") o
    CROSS JOIN LATERAL (SELECT * FROM pg_catalog.pg_type t WHERE t.oid = o.objid OFFSET 0) t  -- by oid, whatever the estimates
    WHERE t.typtype IN ('e', 'd') AND t.typnamespace = ns.oid
), items AS (
    SELECT r.nsoid, ROW('r', r.relkind, r.relname)::text AS item FROM rel r
    UNION ALL
    SELECT r.nsoid, ROW('a', r.relname, a.attnum, a.attname,
               CASE WHEN left(x.ft, length(r.q)) = r.q THEN '@.' || substr(x.ft, length(r.q) + 1) ELSE x.ft END,
               a.attnotnull, a.attgenerated, a.attidentity, a.attcollation, a.attndims,
               CASE WHEN strpos(x.df, r.q) > 0 OR strpos(x.df, 'nextval(') > 0 THEN r.nspname END, x.df)::text
    FROM rel r
    JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    CROSS JOIN LATERAL (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) AS ft,
                               pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS df) x
    UNION ALL
    SELECT r.nsoid, ROW('k', r.relname, k.conname, k.contype, k.conkey,
               CASE WHEN f.relnamespace = r.nsoid THEN '@' ELSE fn.nspname END, f.relname, k.confkey,
               k.confupdtype, k.confdeltype, k.confmatchtype, k.condeferrable, k.condeferred, i.relname)::text
    FROM rel r JOIN pg_catalog.pg_constraint k ON k.conrelid = r.oid
    LEFT JOIN pg_catalog.pg_class f ON f.oid = k.confrelid
    LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = f.relnamespace
    LEFT JOIN pg_catalog.pg_class i ON i.oid = k.conindid
    UNION ALL
    SELECT r.nsoid, ROW('i', r.relname, c.relname, c.relam, c.reloptions,
               CASE WHEN x.indexprs IS NULL AND x.indpred IS NULL THEN y.j
                    ELSE regexp_replace(y.j, ' \:location -?[0-9]+', '', 'g') END)::text
    FROM rel r JOIN pg_catalog.pg_index x ON x.indrelid = r.oid JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
    CROSS JOIN LATERAL (SELECT (to_jsonb(x) - '{indexrelid,indrelid,indcheckxmin,indisclustered,indisready,indislive,indisreplident}'::text[])::text AS j) y
    UNION ALL
    SELECT t.nsoid, ROW('e', t.typname,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_catalog.pg_enum e
                WHERE e.enumtypid = t.oid))::text
    FROM typ t WHERE t.typtype = 'e'
    UNION ALL
    SELECT t.nsoid, ROW('d', t.typname,
               CASE WHEN left(x.ft, length(t.q)) = t.q THEN '@.' || substr(x.ft, length(t.q) + 1) ELSE x.ft END,
               t.typnotnull, t.typcollation, t.typndims,
               CASE WHEN strpos(t.typdefault, t.q) > 0 OR strpos(t.typdefault, 'nextval(') > 0 THEN t.nspname END,
               t.typdefault, x.checks,
               CASE WHEN strpos(x.checks::text, t.q) > 0 THEN t.nspname END)::text
    FROM typ t
    CROSS JOIN LATERAL (SELECT pg_catalog.format_type(t.typbasetype, t.typtypmod) AS ft,
                               (SELECT array_agg(ROW(k.conname, pg_catalog.pg_get_constraintdef(k.oid))::text ORDER BY k.conname)
                                FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid) AS checks) x
    WHERE t.typtype = 'd'
)
SELECT ns.nspname, coalesce(h.digest, encode(sha256(''::bytea), 'hex'))
FROM ns LEFT JOIN (
    SELECT nsoid, encode(sha256(convert_to(string_agg(item, E'\n' ORDER BY item COLLATE "C"), 'UTF8')), 'hex') AS digest
    FROM items GROUP BY nsoid
) h ON h.nsoid = ns.oid
"""
)
# The batch's relations: each schema's through pg_depend (catalog_paths.py), never a scan of
# pg_class (it has no index on the namespace alone).
PG_RELATIONS = sa.text(
    "SELECT r.objid FROM unnest(CAST(:schemas AS name[])) s(name)"
    " CROSS JOIN LATERAL (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = s.name OFFSET 0) n"
    " CROSS JOIN LATERAL (" + relations("n.oid") + ") r(objid)"
)
# For both queries: nested loops over index lookups, never a hash or merge join that reads a
# whole catalog (pg_attribute holds every column of every tenant) once per batch.
PG_PLANNER = {"enable_hashjoin": "off", "enable_mergejoin": "off"}

SQLITE_OBJECTS = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE NOT (tbl_name = ? AND type IN ('table', 'index'))"


def sqlite_hash(rows: list[tuple[object, ...]]) -> str:
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: tuple("" if v is None else str(v) for v in r)):
        digest.update(repr(tuple(row)).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()

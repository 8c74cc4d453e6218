"""Every catalog query of the PostgreSQL backend can use an index (issue 22).

A fleet's catalogs grow with every tenant (~53 pg_class rows and hundreds of pg_attribute and
pg_depend rows each): a query that scans one of them costs the size of the whole database for
every tenant it is asked about. So each catalog query, found by walking the backend's modules
(every module-level constant whose text reads a pg_ catalog: a new one is tested without being
listed anywhere), is EXPLAINed under ``enable_seqscan = off`` (a small test catalog makes the
planner prefer scans otherwise; see _INDEX_LOOKUPS_ONLY), and its plan must read those catalogs
only through index lookups: no Seq Scan, and no index scan without a condition (a whole catalog
read in index order).
No timings: the plan is the assertion, the scale figures live in benchmarks/.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import DATABASE_LEVEL, database_section, write_config
from sqlalchemy.pool import NullPool

import docex_migrate.backends
from docex_migrate import api
from docex_migrate.config import load_settings

pytestmark = pytest.mark.postgres

# The catalogs that grow with the fleet: one row (or dozens) per tenant object.
GROWING = {
    "pg_class",
    "pg_attribute",
    "pg_depend",
    "pg_type",
    "pg_constraint",
    "pg_index",
    "pg_attrdef",
    "pg_proc",
    "pg_namespace",
    "pg_enum",
    "pg_trigger",
    "pg_rewrite",
    "pg_policy",
    "pg_range",
}
# Whether a plan of index lookups exists: with sequential scans off a small catalog's planner
# still prefers a merge or hash join over a whole index, which at scale it would not; without
# them a query that has no indexed path still shows a Seq Scan, or an index scan without a
# condition. (The bulk reads run under fingerprints.PG_PLANNER, or as scalar subqueries, so
# they are planned this way at any size.)
_INDEX_LOOKUPS_ONLY = ("enable_seqscan", "enable_hashjoin", "enable_mergejoin")
# Each index of the growing catalogs -> its leading column.
_LEADING_COLUMNS = sa.text(
    "SELECT i.relname, a.attname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
    " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]"
    " WHERE x.indrelid IN (SELECT c.oid FROM pg_class c WHERE c.relname = ANY(:catalogs) AND c.relnamespace = 'pg_catalog'::regnamespace)"
)
_READS_CATALOG = re.compile(r"(?is)\bselect\b.*\b(?:from|join)\s+(?:pg_catalog\.)?pg_\w+")
_DRIVER_PARAMETER = re.compile(r"%\((\w+)\)s")


def _modules() -> Iterator[Any]:
    """docex_migrate.backends and everything under it but SQLite's (which has no pg_ catalog)."""
    yield docex_migrate.backends
    for info in pkgutil.walk_packages(docex_migrate.backends.__path__, "docex_migrate.backends."):
        if ".sqlite" not in info.name:
            yield importlib.import_module(info.name)


def catalog_queries() -> dict[str, sa.TextClause | str]:
    """module.NAME -> the query, for every module-level constant that reads a pg_ catalog."""
    found: dict[str, sa.TextClause | str] = {}
    for module in _modules():
        for name, value in vars(module).items():
            text = value.text if isinstance(value, sa.TextClause) else value if isinstance(value, str) else None
            if text is not None and _READS_CATALOG.search(text) and value not in found.values():  # not imported ones again
                found[f"{module.__name__.removeprefix('docex_migrate.')}.{name}"] = value
    return found


QUERIES = catalog_queries()


def test_every_catalog_query_is_found_and_none_is_inline() -> None:
    """The walk finds the known ones (so it finds at all), and no function hides a catalog
    query in a string literal of its own, where the walk would not see it."""
    assert {
        "backends.postgresql.fresh._HAS_TABLES",
        "backends.postgresql.catalog_reads._CATALOG",
        "backends.fingerprints.PG_RELATIONS",
        "backends.fingerprints.PG_FINGERPRINTS",
        "backends.postgresql.deprovision._FOREIGN_DEPENDENTS",
        "backends.postgresql.deprovision._LARGE_OBJECT_COLUMNS",
    } <= set(QUERIES)
    inline = []
    for module in _modules():
        if module.__name__.endswith(".catalog_paths"):  # fragments, used only inside constants
            continue
        for function in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(function):
                    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _READS_CATALOG.search(node.value):
                        inline.append(f"{module.__name__}.{function.name}: {node.value[:60]!r}")
    assert not inline, "catalog queries must be module-level constants (tested here): " + "; ".join(inline)


@pytest.fixture(scope="module")
def catalog(pg_url, tmp_path_factory):
    """A database with two provisioned tenants (full schema), its engine, and sample values for
    every parameter a catalog query takes."""
    workdir = tmp_path_factory.mktemp("catalog")
    config = write_config(
        workdir / "docex.yaml", {"database": database_section("postgres", "tidx_{tenant_id}", pg_url), "security": DATABASE_LEVEL}
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DOCEX_CONFIG", str(config))
        monkeypatch.chdir(workdir)
        assert not any(r.failed for r in api.provision(load_settings(), ["a", "b"]))
    engine = sa.create_engine(pg_url, poolclass=NullPool)
    with engine.connect() as connection:
        relations = connection.execute(
            sa.text("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tidx_a'")
        ).scalars()
        samples = {
            "schema": "tidx_a",
            "schemas": ["tidx_a", "tidx_b"],
            "tables": ["docbasket", "document"],
            "version_table": "alembic_version",
            "relations": list(relations),
            "path": '"tidx_a"',
            "lock": "1s",
            "statement": "1s",
            "wait": "1s",
        }
    yield engine, samples
    engine.dispose()


def _parameters(query: sa.TextClause | str) -> list[str]:
    if isinstance(query, sa.TextClause):
        return list(query.compile().params)
    return list(dict.fromkeys(_DRIVER_PARAMETER.findall(query)))


def _unindexed(plan: dict[str, Any], leading: dict[str, str]) -> Iterator[str]:
    """Each node of the plan that reads a growing catalog other than by an index lookup: a Seq
    Scan, or an index scan whose condition does not bound the index's leading column (PostgreSQL
    then reads the whole index: pg_class_relname_nsp_index "by relnamespace" is such a scan)."""
    kind, relation, index = plan.get("Node Type"), plan.get("Relation Name"), plan.get("Index Name")
    if kind == "Seq Scan" and relation in GROWING:
        yield f"Seq Scan on {relation}"
    if index in leading:
        condition = plan.get("Index Cond", "")
        if not re.search(rf"\(\s*(\w+\.)?{leading[index]} = ", condition):
            yield f"{kind} on {index} not bounded on {leading[index]} (the whole index): {condition or 'no condition'}"
    for child in plan.get("Plans", []):
        yield from _unindexed(child, leading)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_catalog_query_uses_indexes(catalog, name: str) -> None:
    engine, samples = catalog
    query = QUERIES[name]
    missing = [p for p in _parameters(query) if p not in samples]
    assert not missing, f"{name} takes {missing}: add a sample value to the catalog fixture"
    with engine.connect() as connection:
        for setting in _INDEX_LOOKUPS_ONLY:
            connection.exec_driver_sql(f"SET LOCAL {setting} = off")
        if isinstance(query, sa.TextClause):
            explained = connection.execute(sa.text("EXPLAIN (FORMAT JSON) " + query.text), samples).scalar()
        else:
            driver: Any = connection.connection.driver_connection
            explained = driver.execute("EXPLAIN (FORMAT JSON) " + query, samples).fetchone()[0]
        leading = dict(connection.execute(_LEADING_COLUMNS, {"catalogs": sorted(GROWING)}).all())
    found = list(_unindexed(explained[0]["Plan"], leading))
    assert found == [], f"{name} reads a whole catalog: {found}"

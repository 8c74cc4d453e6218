"""The chain is DocEX's real history: every generation and the head equal DocEX's own schemas."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from helpers import DOCEX_2_9_10, migrate_to, tenant_engine, tenant_snapshot
from reference_schemas import (
    GENERATIONS,
    HEAD_PG,
    HEAD_SQLITE,
    pg_reference,
    sqlite_reference,
)

from docex_migrate import api
from docex_migrate.chain import load_chain
from docex_migrate.schema import metadata
from docex_migrate.snapshot import differences


def reference(env, sql_file: str, tmp_path) -> dict:
    if env.kind == "sqlite":
        return sqlite_reference(sql_file, tmp_path / "reference.db")
    schema = env.namespace("reference")
    return pg_reference(sql_file, env.engine(), schema)


def test_chain_is_the_seven_docex_generations():
    assert load_chain().order[: len(GENERATIONS) + 1] == [*GENERATIONS, DOCEX_2_9_10]  # revisions may follow


@pytest.mark.released_head
def test_head_equals_docex_2_9_10(env, tmp_path):
    (result,) = api.provision(env.settings, ["acme_corp"])
    assert result.action == "provisioned", result.message
    expected = reference(env, HEAD_SQLITE if env.kind == "sqlite" else HEAD_PG, tmp_path)
    actual = tenant_snapshot(env, "acme_corp")
    assert len(actual["tables"]) == 11
    assert sum(len(t["indexes"]) for t in actual["tables"].values()) == 26
    assert differences(expected, actual) == []


@pytest.mark.parametrize("revision", list(GENERATIONS))
def test_each_revision_equals_its_docex_generation(env, tmp_path, revision):
    migrate_to(env, "acme_corp", revision)
    suffix = "sqlite.sql" if env.kind == "sqlite" else "pg-compiled.sql"
    expected = reference(env, f"{GENERATIONS[revision]}.{suffix}", tmp_path)
    assert differences(expected, tenant_snapshot(env, "acme_corp")) == []


def test_package_metadata_matches_head(env):
    api.provision(env.settings, ["acme_corp"])
    engine = tenant_engine(env, "acme_corp")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diffs = compare_metadata(context, metadata)
    engine.dispose()
    assert diffs == []


def test_metadata_check_can_fail(env):
    """The comparison above sees a difference when there is one (it is not vacuous)."""
    api.provision(env.settings, ["acme_corp"])
    engine = tenant_engine(env, "acme_corp")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX idx_docbasket_status")
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert [d[0] for d in diffs] == ["add_index"]


def test_every_step_down_leaves_no_trace(env):
    """For each revision: upgrade one step, downgrade it, and the catalog is exactly as before."""
    chain = load_chain()
    previous = None
    migrate_to(env, "acme_corp", None)  # creates an empty namespace at base
    for revision in chain.order:
        before = tenant_snapshot(env, "acme_corp")
        migrate_to(env, "acme_corp", revision)
        if revision in (*GENERATIONS, DOCEX_2_9_10):  # each DocEX generation changes the schema
            assert tenant_snapshot(env, "acme_corp") != before, revision
        migrate_to(env, "acme_corp", previous, downgrade=True)
        assert differences(before, tenant_snapshot(env, "acme_corp")) == [], f"downgrade of {revision}"
        migrate_to(env, "acme_corp", revision)
        previous = revision


def test_downgrade_to_base_then_upgrade_again(env):
    api.provision(env.settings, ["acme_corp"])
    at_head = tenant_snapshot(env, "acme_corp")  # DocEX 2.9.10's, as test_head_equals_docex_2_9_10 proves
    api.downgrade(env.settings, ["acme_corp"], "base")
    empty = tenant_snapshot(env, "acme_corp")
    assert empty["tables"] == {}
    assert empty.get("enums", []) == []
    (result,) = api.upgrade(env.settings, ["acme_corp"])
    assert result.action == "upgraded"
    assert differences(at_head, tenant_snapshot(env, "acme_corp")) == []


ROUTE = {
    "id": "rte_1",
    "name": "inbox",
    "purpose": "ingest",
    "config": "{}",
    "can_upload": True,
    "can_download": False,
    "can_list": False,
    "can_delete": False,
    "route_metadata": "{}",
    "tags": "[]",
    "priority": 0,
    "enabled": True,
    "created_at": "2024-01-01",
    "updated_at": "2024-01-01",
}


def _enum_values(env) -> tuple[list[str], list[str]]:
    engine = tenant_engine(env, "acme_corp")
    with engine.connect() as conn:
        protocols = conn.execute(sa.text("SELECT CAST(protocol AS VARCHAR) FROM transport_routes ORDER BY id")).scalars().all()
        methods = (
            conn.execute(sa.text("SELECT CAST(operation_type AS VARCHAR) FROM route_operations ORDER BY id")).scalars().all()
        )
    engine.dispose()
    return protocols, methods


def test_s3_converts_enum_names_to_values_and_back(env):
    migrate_to(env, "acme_corp", "s2_docex_2_0_3")
    engine = tenant_engine(env, "acme_corp")
    with engine.begin() as conn:
        for i, protocol in enumerate(["LOCAL", "SFTP", "S3"]):
            conn.execute(
                sa.text(
                    "INSERT INTO transport_routes (id, name, purpose, protocol, config, can_upload, can_download, can_list,"
                    " can_delete, route_metadata, tags, priority, enabled, created_at, updated_at) VALUES (:id, :name,"
                    " :purpose, :protocol, :config, :can_upload, :can_download, :can_list, :can_delete, :route_metadata,"
                    " :tags, :priority, :enabled, :created_at, :updated_at)"
                ),
                {**ROUTE, "id": f"rte_{i}", "name": f"route{i}", "protocol": protocol},
            )
        for i, method in enumerate(["UPLOAD", "DOWNLOAD", "DELETE"]):
            conn.execute(
                sa.text(
                    "INSERT INTO route_operations (id, route_id, operation_type, status, created_at)"
                    " VALUES (:id, 'rte_0', :m, 'done', '2024-01-01')"
                ),
                {"id": f"rop_{i}", "m": method},
            )
    engine.dispose()

    migrate_to(env, "acme_corp", "s3_docex_2_2_1")
    assert _enum_values(env) == (["local", "sftp", "s3"], ["upload", "download", "delete"])
    if env.kind == "postgres":
        assert tenant_snapshot(env, "acme_corp")["enums"] == []

    migrate_to(env, "acme_corp", "s2_docex_2_0_3", downgrade=True)
    assert _enum_values(env) == (["LOCAL", "SFTP", "S3"], ["UPLOAD", "DOWNLOAD", "DELETE"])
    if env.kind == "postgres":
        assert [e[0] for e in tenant_snapshot(env, "acme_corp")["enums"]] == ["routemethod", "transporttype"]

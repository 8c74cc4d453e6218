"""What alembic/env.py runs: one tenant namespace per Alembic run.

docex-migrate itself drives tenants' migrations without env.py (runner.migrate_tenant builds the
MigrationContext directly, with the same ``context_options``); env.py serves the plain Alembic
CLI, offline rendering, stamping and autogenerate. Either way docex-migrate passes the tenant's connection (already inside its transaction, locked, and
scoped to the tenant's namespace) through ``config.attributes``. Only under the plain Alembic
CLI, ``alembic -x tenant=acme-corp upgrade head``, is a connection made here, from DocEX's
configuration (``-x config=PATH``, $DOCEX_CONFIG, ~/.docex/config.yaml or the built-in SQLite
default), creating the tenant's namespace if it is missing. Tools that drive Alembic themselves
(pytest-alembic) may hand over an engine instead: env.py connects to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from logging.config import fileConfig
from pathlib import Path
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from .authoring import revision_directives
from .chain import VERSION_TABLE
from .checkout import tenant_metadata
from .schema import metadata


def _not_the_version_table(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """Autogenerate's name filter: alembic_version is Alembic's, never the metadata's. Alembic
    skips it only in ``version_table_schema``, but on PostgreSQL the tenant's schema is also
    the connection's default one, where autogenerate finds it again and proposes dropping it."""
    return not (type_ == "table" and name == VERSION_TABLE)


def context_options(version_table_schema: str | None) -> dict[str, Any]:
    """The MigrationContext options of every online run, through env.py or not."""
    return {
        "target_metadata": metadata,
        "version_table_schema": version_table_schema,  # alembic_version lives inside the namespace
        "render_as_batch": True,  # SQLite cannot ALTER most things; batch mode rebuilds tables
        "compare_type": True,
        "compare_server_default": True,
        "include_name": _not_the_version_table,
    }


@contextmanager
def _attributes_set(**values: Any) -> Iterator[None]:
    """``config.attributes`` holding ``values`` for this run only: a caller may run several
    commands on one Config (pytest-alembic does), and the next must not find this run's
    connection, closed by then."""
    attributes = context.config.attributes
    before = {key: attributes[key] for key in values if key in attributes}
    attributes.update(values)
    try:
        yield
    finally:
        for key in values:
            attributes.pop(key, None)
        attributes.update(before)


def _run_on(connection: Connection, version_table_schema: str | None) -> None:
    options = context_options(version_table_schema)
    # Autogenerate compares with the schema.py beside the revisions (a checkout's, not the
    # installed one) and writes revisions that pass `check` as written (authoring.py).
    options["target_metadata"] = tenant_metadata(Path(context.script.dir), metadata)
    then = context.config.attributes.get("process_revision_directives")
    context.configure(connection=connection, process_revision_directives=revision_directives(then), **options)
    with context.begin_transaction():
        context.run_migrations()


def _run_on_given(connectable: Any) -> None:
    """A connection or engine handed over in ``config.attributes["connection"]``. docex-migrate
    hands over the tenant's connection; tools following Alembic's cookbook (pytest-alembic) hand
    over an engine, or a wrapper of their connection, and expect env.py to ``connect()`` to it.
    The tenant is then whatever it is scoped to (testing.scratch_tenant_engine)."""
    version_table_schema = context.config.attributes.get("version_table_schema")
    if isinstance(connectable, Connection):
        _run_on(connectable, version_table_schema)
        return
    with connectable.connect() as connection, _attributes_set(connection=connection):
        _run_on(connection, version_table_schema)


def _run_from_alembic_cli() -> None:
    from .backends import open_backend
    from .config import load_settings

    config = context.config
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    arguments = context.get_x_argument(as_dictionary=True)
    tenant_id = arguments.get("tenant")
    if not tenant_id:
        raise SystemExit("name the tenant: alembic -x tenant=TENANT_ID upgrade head")
    with open_backend(load_settings(arguments.get("config"))) as backend:
        with backend.transaction(tenant_id, create=True) as connection:
            schema = backend.schema(tenant_id)
            # What docex-migrate passes too, so a revision reads the same attributes either way.
            with _attributes_set(connection=connection, tenant_id=tenant_id, version_table_schema=schema):
                _run_on(connection, schema)


def _render_offline() -> None:
    """--sql: write the SQL instead of running it (for review, and the offline-sql check).

    The dialect comes from ``config.attributes["dialect_name"]`` or, under the plain CLI, from
    DocEX's configuration. The SQL is unqualified: run it with the tenant's search_path set.
    """
    attributes = context.config.attributes
    dialect = attributes.get("dialect_name")
    if dialect is None:
        from .backends import open_backend
        from .config import load_settings

        with open_backend(load_settings(context.get_x_argument(as_dictionary=True).get("config"))) as backend:
            dialect = backend.kind
    context.configure(
        dialect_name=dialect,
        literal_binds=True,
        target_metadata=metadata,
        version_table_schema=attributes.get("version_table_schema"),
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    if context.is_offline_mode():
        _render_offline()
        return
    connectable = context.config.attributes.get("connection")
    if connectable is not None:
        _run_on_given(connectable)
    else:
        _run_from_alembic_cli()

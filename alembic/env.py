"""Alembic environment for the DocEX tenant schema: one run migrates one tenant namespace.

docex-migrate passes the tenant's connection (already inside its transaction and scoped to the
tenant's namespace) through ``config.attributes``. Only under the plain Alembic CLI,
``alembic -x tenant=acme-corp upgrade head``, does this file build its own connection, from
DocEX's configuration ($DOCEX_CONFIG, ~/.docex/config.yaml or the built-in SQLite default),
creating the tenant's namespace if it is missing.

Revisions never name a schema: on PostgreSQL the connection's search_path is the tenant's
schema alone, for that transaction only; alembic_version is kept inside that schema.
"""

from logging.config import fileConfig

from alembic import context
from docex_migrate.schema import metadata

config = context.config


def run_on(connection, version_table_schema):
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=version_table_schema,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode rebuilds tables
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_alembic_cli():
    from docex_migrate.backends import backend_for
    from docex_migrate.config import load_settings

    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    tenant_id = context.get_x_argument(as_dictionary=True).get("tenant")
    if not tenant_id:
        raise SystemExit("name the tenant: alembic -x tenant=TENANT_ID upgrade head")
    backend = backend_for(load_settings(context.get_x_argument(as_dictionary=True).get("config")))
    try:
        with backend.transaction(tenant_id, create=True) as connection:
            run_on(connection, backend.schema(tenant_id))
    finally:
        backend.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported for tenant namespaces yet")
connection = config.attributes.get("connection")
if connection is not None:
    run_on(connection, config.attributes.get("version_table_schema"))
else:
    run_from_alembic_cli()

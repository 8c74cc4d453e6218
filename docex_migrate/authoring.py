"""What `revision --autogenerate` writes, shaped so that the file passes `check` as written.

Alembic's autogenerate, left alone, writes ``op.batch_alter_table(name, schema=None)`` (a schema
name: no-schema-names fails; and a batch that cannot render offline for SQLite: offline-sql
fails) and puts new indexes inside the batch, where a SQLite rebuild creates them from their
column names alone and loses their ``DESC``. Two hooks fix that:

- ``process_revision_directives`` moves index creation after each table's batch and index
  removal before it (plain ``op.create_index`` / ``op.drop_index``: exact on both backends), and
  marks each table's remaining operations as a tenant batch;
- the tenant batch renders as ``with batch_alter_table(name) as batch_op:``, the helper of
  ``docex_migrate.revision_tools`` the revision template imports: no schema, renders offline,
  and keeps the DESC of the table's other indexes through a SQLite rebuild.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops

Hook = Callable[[Any, Any, list[Any]], None]  # Alembic's process_revision_directives signature


class TenantBatchOps(ops.ModifyTableOps):
    """A table's column and constraint changes, rendered through revision_tools.batch_alter_table."""


@renderers.dispatch_for(TenantBatchOps)
def _render_tenant_batch(autogen_context: AutogenContext, op: TenantBatchOps) -> list[str]:
    lines: list[str] = renderers.dispatch(ops.ModifyTableOps)(autogen_context, op)
    header = f"with op.batch_alter_table({op.table_name!r}, schema=None) as batch_op:"
    if lines and lines[0] == header:
        lines[0] = f"with batch_alter_table({op.table_name!r}) as batch_op:"
    return lines


def _reshaped(operations: list[ops.MigrateOperation]) -> list[ops.MigrateOperation]:
    result: list[ops.MigrateOperation] = []
    for operation in operations:
        if not isinstance(operation, ops.ModifyTableOps):
            result.append(operation)
            continue
        inner = list(operation.ops)
        result += [o for o in inner if isinstance(o, ops.DropIndexOp)]
        rest = [o for o in inner if not isinstance(o, (ops.CreateIndexOp, ops.DropIndexOp))]
        if rest:
            result.append(TenantBatchOps(operation.table_name, rest, schema=None))
        result += [o for o in inner if isinstance(o, ops.CreateIndexOp)]
    return result


def revision_directives(then: Hook | None = None) -> Hook:
    """Alembic's ``process_revision_directives`` for the tenant chain, followed by ``then``."""

    def process(context: Any, revision: Any, directives: list[Any]) -> None:
        for script in directives:
            if isinstance(script, ops.MigrationScript):
                for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
                    container.ops = _reshaped(container.ops)
        if then is not None:
            then(context, revision, directives)

    return process

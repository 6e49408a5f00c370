"""The first schema: history records, approvals and the local targets' records.

A ``history.sqlite`` written before the store existed already has ``records`` and ``approvals``
(same columns): they are adopted as they are.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    from pipeline_plugin.store import schema

    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in (schema.records, schema.approvals, schema.target_deployments, schema.target_history, schema.target_images):
        if table.name not in existing:
            table.create(bind)


def downgrade() -> None:
    for name in ("target_images", "target_history", "target_deployments", "approvals", "records"):
        op.drop_table(name)

"""The inbox's tables (``inbox_events``, ``inbox_deliveries``, ``inbox_runs``, ``inbox_history``,
``inbox_leases``), so that several ``serve`` replicas share one inbox on PostgreSQL.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from pipeline_plugin.store import schema

    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in schema.INBOX_TABLES:
        if table.name not in existing:
            table.create(bind)


def downgrade() -> None:
    for name in ("inbox_leases", "inbox_history", "inbox_runs", "inbox_deliveries", "inbox_events"):
        op.drop_table(name)

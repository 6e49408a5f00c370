"""The pollers' state (``inbox_poll_state``): which (source, registry) was polled already, so that
only the first poll of a registry is a baseline (pipeline_plugin.poll.baseline).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from pipeline_plugin.store import schema

    bind = op.get_bind()
    if "inbox_poll_state" not in set(sa.inspect(bind).get_table_names()):
        schema.inbox_poll_state.create(bind)


def downgrade() -> None:
    op.drop_table("inbox_poll_state")

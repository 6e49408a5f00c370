"""The models each poller covers (``inbox_poll_state.models_json``), so that a model added to a
poller's list later has its existing versions recorded as a baseline, not deployed
(pipeline_plugin.poll.baseline). Rows from before keep NULL: not known, taken as what is configured
at their next poll.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    # 0003 creates the table from the current schema, which has the column already
    if "models_json" not in {c["name"] for c in sa.inspect(bind).get_columns("inbox_poll_state")}:
        op.add_column("inbox_poll_state", sa.Column("models_json", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("inbox_poll_state", "models_json")

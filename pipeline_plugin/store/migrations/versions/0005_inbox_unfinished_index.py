"""An index of each model's unfinished inbox events in order (``inbox_events_unfinished``, partial:
``WHERE NOT done``). A claim looks up the oldest unfinished event of each model and the ones after
it; without it that walk read a model's whole history, and a backlog of one model was matched in
time that grew with the square of its length (8 events a second at 2,000).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    # 0002 creates the table from the current schema, which has the index already
    if "inbox_events_unfinished" not in {i["name"] for i in sa.inspect(bind).get_indexes("inbox_events")}:
        op.create_index("inbox_events_unfinished", "inbox_events", ["source", "registry_key", "model", "seq"],
                        postgresql_where=sa.text("NOT done"), sqlite_where=sa.text("done = 0"))


def downgrade() -> None:
    op.drop_index("inbox_events_unfinished", table_name="inbox_events")

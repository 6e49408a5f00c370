"""The store's tables (SQLAlchemy Core). Changing them needs a new migration in ``migrations/versions``."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text

metadata = MetaData()

#: one row per stage outcome of a service's environment (see :mod:`pipeline_plugin.store.history`)
records = Table(
    "records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Text, nullable=False),
    Column("service", Text, nullable=False),
    Column("env", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("model", Text),
    Column("version", Text),
    Column("image", Text),
    Column("image_id", Text),
    Column("scoring_uri", Text),
    Column("target", Text),
    Column("run_id", Text),
    Column("cause", Text),
    Column("reason", Text, nullable=False, server_default=""),
    Column("details", Text, nullable=False, server_default="{}"),
    Index("records_service_env", "service", "env", "id"),
    sqlite_autoincrement=True,
)

#: promotions held by an approval gate
approvals = Table(
    "approvals",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("service", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("requested_at", Text, nullable=False),
    Column("decided_at", Text),
    Column("decided_by", Text),
    Column("request", Text, nullable=False),
)

#: the active deployment of a local target's (service, env): a JSON record (port, instances,
#: nginx prefix, the Deployment)
target_deployments = Table(
    "target_deployments",
    metadata,
    Column("target", String(32), nullable=False),
    Column("service", String(63), nullable=False),
    Column("env", String(63), nullable=False),
    Column("record", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    PrimaryKeyConstraint("target", "service", "env", name="target_deployments_pk"),
)

#: deployments of a local target's (service, env) that were replaced or deleted
target_history = Table(
    "target_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(32), nullable=False),
    Column("service", String(63), nullable=False),
    Column("env", String(63), nullable=False),
    Column("event", Text, nullable=False),
    Column("at", Text, nullable=False),
    Column("data", Text, nullable=False),
    Index("target_history_service_env", "target", "service", "env", "id"),
    sqlite_autoincrement=True,
)

#: where a target finds an image it deployed, by content digest (the process target's package folders)
target_images = Table(
    "target_images",
    metadata,
    Column("target", String(32), nullable=False),
    Column("image_id", String(100), nullable=False),
    Column("location", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    PrimaryKeyConstraint("target", "image_id", name="target_images_pk"),
)

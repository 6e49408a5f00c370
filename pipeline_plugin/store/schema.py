"""The store's tables (SQLAlchemy Core). Changing them needs a new migration in ``migrations/versions``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger, Boolean, Column, Float, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text,
    UniqueConstraint, text,
)

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

# ---- the inbox on a shared database (pipeline_plugin.inbox.postgres): the same tables as the
# SQLite inbox (pipeline_plugin/inbox/sqlite.py), prefixed ``inbox_``; lease times are epoch
# seconds of the database's clock (replicas on different hosts share one clock)

inbox_events = Table(
    "inbox_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("dedupe_key", Text, nullable=False, unique=True),
    Column("source", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("registry_key", Text, nullable=False),
    Column("delivery_id", Text, nullable=False),
    Column("event_json", Text, nullable=False),
    Column("received_at", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("reason", Text, nullable=False, server_default=""),
    Column("rules_json", Text, nullable=False, server_default="[]"),
    Column("done", Boolean, nullable=False, server_default="false"),
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float, nullable=False, server_default="0"),
    Column("lease_owner", Text),
    Column("lease_until", Float),
    Column("last_error", Text),
    Column("processed_at", Text),
    Index("inbox_events_todo", "done", "next_attempt_at"),
    Index("inbox_events_model", "source", "registry_key", "model", "seq"),
    # each model's unfinished events in order, without its finished history (the claim's walk)
    Index("inbox_events_unfinished", "source", "registry_key", "model", "seq",
          postgresql_where=text("NOT done"), sqlite_where=text("done = 0")),
    sqlite_autoincrement=True,
)

inbox_deliveries = Table(
    "inbox_deliveries",
    metadata,
    Column("source", Text, nullable=False),
    Column("delivery_id", Text, nullable=False),
    Column("received_at", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("meta_json", Text, nullable=False, server_default="{}"),
    PrimaryKeyConstraint("source", "delivery_id", name="inbox_deliveries_pk"),
)

inbox_runs = Table(
    "inbox_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("rule_name", Text, nullable=False),
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("provider", Text, nullable=False),
    Column("pipeline_json", Text, nullable=False, server_default="{}"),
    Column("rules_dir", Text),
    Column("status", Text, nullable=False, server_default="recorded"),
    Column("url", Text),
    Column("external_id", Text),
    Column("detail", Text, nullable=False, server_default=""),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    UniqueConstraint("event_id", "rule_name", "generation", name="inbox_runs_once"),
    Index("inbox_runs_event", "event_id", "generation"),
)

inbox_history = Table(
    "inbox_history",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False),
    Column("at", Text, nullable=False),
    Column("what", Text, nullable=False),
    Column("data_json", Text, nullable=False, server_default="{}"),
    Index("inbox_history_event", "event_id", "seq"),
    sqlite_autoincrement=True,
)

inbox_leases = Table(
    "inbox_leases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("until", Float, nullable=False),
    Column("status_json", Text, nullable=False, server_default="{}"),
    Column("updated_at", Float, nullable=False),
)

INBOX_TABLES = (inbox_events, inbox_deliveries, inbox_runs, inbox_history, inbox_leases)

# ---- the pollers' state (pipeline_plugin.poll.baseline): one row per polled (source, registry), written
# after its first successful poll (a baseline, or ``since``); migration 0003. ``models_json``: the
# models the poller covers (a JSON list of names, or "all"; NULL in rows from before 0004)
inbox_poll_state = Table(
    "inbox_poll_state",
    metadata,
    Column("source", Text, nullable=False),
    Column("registry", Text, nullable=False),
    Column("first_poll_at", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("baseline", Integer, nullable=False, server_default="0"),
    Column("models_json", Text, nullable=True),
    PrimaryKeyConstraint("source", "registry", name="inbox_poll_state_pk"),
)

"""Alembic environment: run by :func:`pipeline_plugin.store.engine.migrate` with an open connection
(``config.attributes["connection"]``); never from the command line against a URL of its own."""

from alembic import context

from pipeline_plugin.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()

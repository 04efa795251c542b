"""Alembic environment: the models of ``store.models`` on the URL given by the caller.

The URL comes from, in order: the config (``store.migrate`` sets it), ``-x database_url=...``
on the alembic command line, ``AUDITOR_DATABASE_URL``, the embedded SQLite default.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context

from store.engine import DEFAULT_DATABASE_URL, make_engine
from store.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    return (config.get_main_option("sqlalchemy.url")
            or context.get_x_argument(as_dictionary=True).get("database_url")
            or os.environ.get("AUDITOR_DATABASE_URL")
            or DEFAULT_DATABASE_URL)


def _render_item(type_, obj, autogen_context):
    """Render the models' UTC timestamp type as the plain column type it stores."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs) -> None:
    context.configure(target_metadata=target_metadata, render_as_batch=True, compare_type=True,
                      render_item=_render_item, **kwargs)


def run_migrations_offline() -> None:
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_database_url(), pool_size=1)
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

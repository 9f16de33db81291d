"""Alembic environment: target metadata is the indexer's models; batch mode on SQLite.

The URL comes from the Alembic config's ``sqlalchemy.url`` when the indexer sets
it, else from ``DATABASE_URL``. A connection passed in ``config.attributes``
(the indexer's own engine) is reused. ``include_name`` keeps autogenerate away
from the dialect-specific keyword-search table that migration 0002 creates.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from indexer.models import Base, include_name

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("set DATABASE_URL (e.g. sqlite:///data/catalog.sqlite3) to run migrations")
    return url


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,  # the keyword-search table lives in migrations only (0002)
    )


def run_migrations_offline() -> None:
    url = _url()
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"), include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url())
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

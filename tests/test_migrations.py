"""Alembic: empty -> head on SQLite and on the real Postgres; models and migrations agree."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from indexer.db import make_engine, upgrade_to_head
from indexer.models import Base, include_name

TABLES = {"files", "items", "embeddings", "runs", "state", "alembic_version"}


def _check_upgraded(engine) -> None:
    upgrade_to_head(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        # include_name: the same filter as migrations/env.py (the keyword-search table is migration-only)
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        diffs = compare_metadata(ctx, Base.metadata)
        assert diffs == [], f"models and migrations differ: {diffs}"
        assert ctx.get_current_revision() is not None
    fks = {fk["name"] for fk in inspect(engine).get_foreign_keys("items")}
    assert "fk_items_file_id_files" in fks  # the naming convention holds on this dialect
    upgrade_to_head(engine)  # idempotent


def test_sqlite_upgrade_from_empty(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    _check_upgraded(engine)


def test_postgres_upgrade_from_empty(pg_url):
    engine = make_engine(pg_url)
    try:
        assert engine.dialect.name == "postgresql"
        _check_upgraded(engine)
    finally:
        engine.dispose()

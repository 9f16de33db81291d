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


# ---------------------------------------------------------------- kill -9 during the first migration (issue 13, item 5)
_KILLED_MIGRATION = """
import os, signal, sys
from pathlib import Path
from alembic.operations import Operations

calls = {"create_table": 0, "execute": 0}
kind, at = sys.argv[2], int(sys.argv[3])

def killer(name):
    original = getattr(Operations, name)
    def op(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls[name] += 1
        if name == kind and calls[name] == at:
            os.kill(os.getpid(), signal.SIGKILL)  # right after this DDL statement ran
        return out
    setattr(Operations, name, op)

killer("create_table")
killer("execute")
from indexer.catalog import Catalog
Catalog(Path(sys.argv[1]))
print("migration finished without being killed")
"""


@pytest.mark.parametrize("kind,at", [("create_table", 1), ("create_table", 3), ("create_table", 5),
                                     ("execute", 2)])  # 0001's tables, then 0002's FTS statements
def test_kill_9_during_first_migration_then_next_command_works(tmp_path, kind, at):
    import sqlite3
    import subprocess
    import sys

    from conftest import REPO, run_json

    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-c", _KILLED_MIGRATION, str(data), kind, str(at)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    with sqlite3.connect(data / "catalog.sqlite3") as conn:  # the kill rolled the whole schema back
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    assert not tables & {"files", "items", "runs", "state", "embeddings"}, tables

    status = run_json("indexer", "status", "--data-dir", str(data))
    assert status["items"] == {}
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("A note about migrating birds.")
    assert run_json("indexer", "add", str(notes), "--data-dir", str(data))["added"] == 1


def test_catalog_half_built_by_an_older_version_is_repaired(tmp_path):
    """The exact state the old non-transactional migration left after a kill: some 0001 tables, an empty
    alembic_version (Python's sqlite3 committed each CREATE on its own)."""
    import sqlite3

    from conftest import run_json

    scratch = tmp_path / "scratch.sqlite3"
    upgrade_to_head(make_engine(f"sqlite:///{scratch}"))
    with sqlite3.connect(scratch) as conn:
        ddl = dict(conn.execute("select name, sql from sqlite_master where name in "
                                "('alembic_version', 'files', 'runs', 'ix_files_status')"))
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / "catalog.sqlite3", isolation_level=None)
    for name in ("alembic_version", "files", "ix_files_status", "runs"):
        conn.execute(ddl[name])
    conn.close()
    status = run_json("indexer", "status", "--data-dir", str(data))
    assert status["items"] == {} and status["revision"] == 0
    engine = make_engine(f"sqlite:///{data / 'catalog.sqlite3'}")
    try:
        _check_upgraded(engine)
    finally:
        engine.dispose()

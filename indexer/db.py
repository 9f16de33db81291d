"""Database location, engine and migrations for one data directory.

``DATABASE_URL`` chooses the database; the default is ``DATA_DIR/catalog.sqlite3``.
Opening a catalog upgrades its schema to Alembic head (the same migrations the
`alembic` command runs), so a fresh data directory just works; the upgrade is one
transaction on SQLite too (see :func:`upgrade_to_head`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
DEFAULT_DATA_DIR = "data"


def data_dir_from(arg: str | os.PathLike | None) -> Path:
    """``--data-dir``, else ``$RETRIEVAL_DATA_DIR``, else ``./data``."""
    return Path(arg or os.environ.get("RETRIEVAL_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()


def configured_database_url() -> str | None:
    """``$DATABASE_URL`` when set (a catalog outside the data directory), else None."""
    return os.environ.get("DATABASE_URL") or None


def database_url(data_dir: Path) -> str:
    return configured_database_url() or f"sqlite:///{Path(data_dir) / 'catalog.sqlite3'}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def schema_versions(engine: Engine) -> tuple[str | None, str]:
    """(the catalog's Alembic revision or None, the head revision this code needs) — read only."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, str(head)


def upgrade_to_head(engine: Engine) -> None:
    """Run Alembic migrations up to head on ``engine``, atomically.

    Postgres runs DDL in the migration's transaction. SQLite's Python driver does not (it commits
    before each ``CREATE``), so a ``kill -9`` during the first migration used to leave tables without
    an ``alembic_version`` row, and every later command failed with "table files already exists".
    Here SQLite migrations run on a connection whose driver leaves transactions to us, inside one
    ``BEGIN IMMEDIATE`` ... ``COMMIT`` (a kill rolls everything back), and a catalog half built by an
    older version (schema tables but no version and no data) is dropped and built again.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    migrate = _sqlite_migration_engine(engine) if engine.dialect.name == "sqlite" else engine
    try:
        with migrate.begin() as conn:
            if conn.dialect.name == "sqlite":
                _drop_half_built_sqlite_schema(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        if migrate is not engine:
            migrate.dispose()


def _sqlite_migration_engine(engine: Engine) -> Engine:
    """A throwaway engine on the same SQLite file whose transactions are real (DDL included)."""
    from sqlalchemy.pool import NullPool

    database = engine.url.database
    if not database or database == ":memory:":
        return engine  # nothing to protect: the database dies with the process
    migrate = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 60})

    @event.listens_for(migrate, "connect")
    def _connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # the driver stops issuing (and skipping) BEGIN/COMMIT itself
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(migrate, "begin")
    def _begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # one writer migrates; the others wait, then see head

    return migrate


_SCHEMA_TABLES = ("embeddings", "items", "files", "runs", "state")


def _drop_half_built_sqlite_schema(conn) -> None:  # noqa: ANN001
    """Drop the tables a migration killed before it recorded its version left behind, if they hold no data."""
    names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "alembic_version" in names and conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar():
        return
    ours = [t for t in _SCHEMA_TABLES if t in names]
    if not ours:
        return
    if any(conn.exec_driver_sql(f'SELECT count(*) FROM "{t}"').scalar() for t in ours if t != "state"):
        raise RuntimeError(
            f"the catalog {conn.engine.url.database} has data but no schema version (alembic_version); "
            f"it was not made by this indexer or was damaged: move it away and re-run the indexer to rebuild it"
        )
    for name in sorted(names):
        if name.startswith("items_fts") and not name.startswith("items_fts_"):
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')  # FTS5 drops its shadow tables itself
    for name in ours:
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
    conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")


def open_sessionmaker(
    data_dir: Path, migrate: bool = True, url: str | None = None
) -> tuple[Engine, sessionmaker[Session]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    url = url or database_url(data_dir)
    engine = make_engine(url)
    if migrate:
        upgrade_to_head(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


ANALYZED_TABLES = ("items", "items_fts", "files", "embeddings")
STALE_FRACTION = 0.1  # as autovacuum's default rule: re-analyse once the row count moved by 10%
STALE_MIN_ROWS = 1000


def analyze_if_stale(engine: Engine) -> bool:
    """Postgres: ``ANALYZE`` the catalog tables when the planner's idea of how many items there are
    (``pg_class.reltuples``; -1 before any analyse) is off by more than ``STALE_FRACTION`` and ``STALE_MIN_ROWS``
    rows; whether it ran. One ``count(*)`` (~80 ms at 1M items) per indexer run decides.

    Autovacuum does the same, but later (or never where it is off): right after a large ``indexer add`` the
    planner still took ``items`` for a small table, and a hybrid query hashed all 1M items (0.7 s instead of
    10 ms). SQLite keeps its hand-ordered plans (its queries force their join order): nothing to do there."""
    if engine.dialect.name != "postgresql":
        return False
    from sqlalchemy import text

    with engine.connect() as conn:
        believed = max(0, conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = 'items'::regclass")).scalar_one())
        actual = conn.execute(text("SELECT count(*) FROM items")).scalar_one()
        off = abs(actual - believed)  # never analysed (-1) counts as believed empty
        if off < STALE_MIN_ROWS or off <= STALE_FRACTION * max(actual, believed):
            return False
        conn.execute(text("ANALYZE " + ", ".join(ANALYZED_TABLES)))  # names from the fixed tuple above
        conn.commit()
    return True

"""Database location, engine and migrations for one data directory.

``DATABASE_URL`` chooses the database; the default is ``DATA_DIR/catalog.sqlite3``.
Opening a catalog upgrades its schema to Alembic head (the same migrations the
`alembic` command runs), so a fresh data directory just works.
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


def database_url(data_dir: Path) -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{Path(data_dir) / 'catalog.sqlite3'}"


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


def upgrade_to_head(engine: Engine) -> None:
    """Run Alembic migrations up to head on ``engine``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_sessionmaker(
    data_dir: Path, migrate: bool = True, url: str | None = None
) -> tuple[Engine, sessionmaker[Session]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    url = url or database_url(data_dir)
    engine = make_engine(url)
    if migrate:
        upgrade_to_head(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)

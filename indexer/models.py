"""SQLAlchemy 2.0 models: files, their indexed items, stored embeddings, runs, state.

``items.id`` is the FAISS id. Embeddings live in their own table (the side store
an index is rebuilt from without re-encoding); metadata queries never load them.
One naming convention gives constraints the same names on SQLite and Postgres.

The keyword-search table (``items_fts``: an FTS5 virtual table on SQLite, a
tsvector table on Postgres) is created and kept in sync by migration 0002 and
its triggers; it is dialect specific, so it is not a model here.
:func:`include_name` hides it (and FTS5's shadow tables) from Alembic's
autogenerate, which would otherwise try to drop it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON, BigInteger, DateTime, Float, ForeignKey, Integer, LargeBinary, MetaData, String, Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


SEARCH_TABLE = "items_fts"


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    """Alembic ``include_name`` hook: skip the migration-only keyword-search table and its shadow tables."""
    return not (type_ == "table" and name is not None and
                (name == SEARCH_TABLE or name.startswith(SEARCH_TABLE + "_")))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class File(Base):
    """One file seen by the indexer (indexed or failed)."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(4096), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)  # "ok" | "error"
    error: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    dev: Mapped[int | None] = mapped_column(BigInteger)  # st_dev / st_ino of the indexed regular file (0003),
    inode: Mapped[int | None] = mapped_column(BigInteger)  # checked before the web UI serves it


class Item(Base):
    """One searchable unit: an image, a text note, one segment of a recording, or a keyframe or speech window
    of a video (``view``)."""

    __tablename__ = "items"
    __table_args__ = {"sqlite_autoincrement": True}  # never reuse an id FAISS may still hold

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), index=True)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    start_s: Mapped[float | None] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float)
    content: Mapped[str | None] = mapped_column(Text)  # transcript or note text
    extra: Mapped[dict | None] = mapped_column(JSON)  # ASR segments, confidences, image size, ...
    view: Mapped[str | None] = mapped_column(String(8))  # video segments (0004): "frame" | "speech"; else NULL


def index_name(modality: str, view: str | None) -> str:
    """The FAISS index an item's vector lives in: ``video-frame``, ``video-speech``, else its modality."""
    return f"{modality}-{view}" if view else modality


def split_index_name(name: str) -> tuple[str, str | None]:
    """(modality, view) of an index name (inverse of :func:`index_name`)."""
    modality, _, view = name.partition("-")
    return modality, view or None


class Embedding(Base):
    """The unit vector of an item (float32 bytes), kept to rebuild indices."""

    __tablename__ = "embeddings"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Thumbnail(Base):
    """The JPEG of a video keyframe item (0004), read only by the web UI."""

    __tablename__ = "thumbnails"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)


class Run(Base):
    """One `indexer add` run and its summary."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(512))
    summary: Mapped[dict | None] = mapped_column(JSON)


class State(Base):
    """Single row: the catalog's model and a revision bumped by every write."""

    __tablename__ = "state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str | None] = mapped_column(String(512))
    checksums: Mapped[dict | None] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)

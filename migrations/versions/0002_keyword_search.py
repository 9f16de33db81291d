"""keyword search: full-text index over items (SQLite FTS5, Postgres tsvector + GIN)

What is searchable per item: its ``content`` (a transcript window or a note
passage) and the words of its file's name without directory or extension
(``/a/red-apple_2.png`` -> ``red-apple_2``; both engines split it into the words
``red``, ``apple``, ``2`` at every character that is not a letter or a digit;
camelCase is not split).

SQLite: a contentful FTS5 table ``items_fts(body, name)`` whose rowid is
``items.id``, tokenizer ``porter unicode61 remove_diacritics 2`` (English stems,
accents folded). Postgres: a table ``items_fts(item_id, document)`` holding
``setweight(to_tsvector('english', name), 'A') || to_tsvector('english', body)``
with a GIN index; the foreign key cascades deletes.

Both are kept in sync by triggers in the database itself, so every writer (the
indexer pipeline, a manual ``DELETE``, a cascade from ``files``) keeps the index
consistent without application code: insert/update of ``items.content`` or
``items.file_id``, delete of an item, and a rename of ``files.path``. Existing
rows are backfilled here. The table is not part of the SQLAlchemy models (it is
dialect specific); ``indexer.models.include_name`` hides it from autogenerate.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
PG_CONFIG = "english"


# ------------------------------------------------------------------ SQLite
def _sqlite_name_words(path: str) -> str:
    """SQL: the file name of ``path`` without its directory and last extension (no regex in SQLite).

    ``rtrim(x, chars)`` strips trailing characters that are in ``chars``; with
    ``chars`` = every character of ``x`` except '/', it leaves the directory
    part, so what follows it is the base name. The same trick with '.' finds
    the extension. A leading-dot name (``.env``) keeps its text.
    """
    base = f"substr({path}, length(rtrim({path}, replace({path}, '/', ''))) + 1)"
    head = f"rtrim({base}, replace({base}, '.', ''))"  # base up to and including its last '.'
    return f"(CASE WHEN length({head}) > 1 THEN substr({base}, 1, length({head}) - 1) ELSE {base} END)"


def _sqlite_row(item: str) -> str:
    """SQL values (rowid, body, name) of the search row of item alias ``item`` (``new`` in a trigger)."""
    name = _sqlite_name_words("f.path")
    return (f"{item}.id, coalesce({item}.content, ''), "
            f"coalesce((SELECT {name} FROM files AS f WHERE f.id = {item}.file_id), '')")


SQLITE_UP = [
    f"CREATE VIRTUAL TABLE items_fts USING fts5(body, name, tokenize = '{FTS_TOKENIZER}')",
    f"""CREATE TRIGGER items_fts_after_insert AFTER INSERT ON items BEGIN
        INSERT INTO items_fts (rowid, body, name) VALUES ({_sqlite_row('new')});
    END""",
    """CREATE TRIGGER items_fts_after_delete AFTER DELETE ON items BEGIN
        DELETE FROM items_fts WHERE rowid = old.id;
    END""",
    f"""CREATE TRIGGER items_fts_after_update AFTER UPDATE OF id, content, file_id ON items BEGIN
        DELETE FROM items_fts WHERE rowid = old.id;
        INSERT INTO items_fts (rowid, body, name) VALUES ({_sqlite_row('new')});
    END""",
    f"""CREATE TRIGGER files_fts_after_rename AFTER UPDATE OF path ON files BEGIN
        UPDATE items_fts SET name = {_sqlite_name_words('new.path')}
        WHERE rowid IN (SELECT id FROM items WHERE file_id = new.id);
    END""",
    f"""INSERT INTO items_fts (rowid, body, name)
        SELECT i.id, coalesce(i.content, ''), coalesce({_sqlite_name_words('f.path')}, '')
        FROM items AS i LEFT JOIN files AS f ON f.id = i.file_id""",
]

SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS files_fts_after_rename",
    "DROP TRIGGER IF EXISTS items_fts_after_update",
    "DROP TRIGGER IF EXISTS items_fts_after_delete",
    "DROP TRIGGER IF EXISTS items_fts_after_insert",
    "DROP TABLE IF EXISTS items_fts",
]


# ------------------------------------------------------------------ Postgres
def _pg_name_words(path: str) -> str:
    """SQL: the words of the file name of ``path`` (directory and last extension dropped)."""
    base = f"regexp_replace({path}, '^.*/', '')"
    stem = f"regexp_replace({base}, '(.)\\.[^.]*$', '\\1')"
    return f"regexp_replace({stem}, '[^[:alnum:]]+', ' ', 'g')"


def _pg_document(body: str, path: str) -> str:
    return (f"setweight(to_tsvector('{PG_CONFIG}', coalesce({_pg_name_words(path)}, '')), 'A') || "
            f"to_tsvector('{PG_CONFIG}', coalesce({body}, ''))")


PG_UP = [
    f"""CREATE FUNCTION items_fts_sync() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO items_fts (item_id, document)
        SELECT NEW.id, {_pg_document('NEW.content', '(SELECT f.path FROM files AS f WHERE f.id = NEW.file_id)')}
        ON CONFLICT (item_id) DO UPDATE SET document = EXCLUDED.document;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER items_fts_after_write AFTER INSERT OR UPDATE OF content, file_id ON items
       FOR EACH ROW EXECUTE FUNCTION items_fts_sync()""",
    f"""CREATE FUNCTION files_fts_rename() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE items_fts AS s SET document = {_pg_document('i.content', 'NEW.path')}
        FROM items AS i WHERE i.id = s.item_id AND i.file_id = NEW.id;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER files_fts_after_rename AFTER UPDATE OF path ON files
       FOR EACH ROW EXECUTE FUNCTION files_fts_rename()""",
    f"""INSERT INTO items_fts (item_id, document)
        SELECT i.id, {_pg_document('i.content', 'f.path')} FROM items AS i LEFT JOIN files AS f ON f.id = i.file_id""",
]

PG_DOWN = [
    "DROP TRIGGER IF EXISTS files_fts_after_rename ON files",
    "DROP FUNCTION IF EXISTS files_fts_rename()",
    "DROP TRIGGER IF EXISTS items_fts_after_write ON items",
    "DROP FUNCTION IF EXISTS items_fts_sync()",
]


def upgrade() -> None:
    """Upgrade schema."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for sql in SQLITE_UP:
            op.execute(sql)
    elif dialect == "postgresql":
        op.create_table(
            "items_fts",
            sa.Column("item_id", sa.Integer(), nullable=False),
            sa.Column("document", postgresql.TSVECTOR(), nullable=False),
            sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_items_fts_item_id_items"),
                                    ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("item_id", name=op.f("pk_items_fts")),
        )
        op.create_index(op.f("ix_items_fts_document"), "items_fts", ["document"], unique=False,
                        postgresql_using="gin")
        for sql in PG_UP:
            op.execute(sql)
    else:
        raise RuntimeError(f"keyword search supports SQLite and PostgreSQL, not {dialect}; "
                           "set DATABASE_URL to one of them")


def downgrade() -> None:
    """Downgrade schema."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for sql in SQLITE_DOWN:
            op.execute(sql)
    elif dialect == "postgresql":
        for sql in PG_DOWN:
            op.execute(sql)
        op.drop_index(op.f("ix_items_fts_document"), table_name="items_fts")
        op.drop_table("items_fts")

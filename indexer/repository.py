"""Repository functions: every SQL statement of the project lives here.

Keyword search (:func:`keyword_search`) reads the full-text table that migration
0002 creates and its triggers keep in sync (item text + file-name words):

* The user's text is never parsed as query syntax. It is cut into terms (runs
  of letters and digits, lower-cased, at most :data:`MAX_KEYWORD_TERMS`
  distinct), so quotes, ``*``, ``OR``/``NOT``/``NEAR``, ``-`` or ``:`` are plain
  words or separators and cannot raise a SQL error; every value is bound.
* Terms are OR'ed and ranked BM25-style, the usual first stage of hybrid
  retrieval: an item matching a rare term outranks one matching common terms,
  and one matching more terms outranks one matching fewer. A single rare
  keyword finds the one item that holds it.
* SQLite: FTS5 ``MATCH`` of the quoted terms, ``bm25(items_fts, 1.0, 2.0)``
  (a file-name match counts double). Postgres: ``plainto_tsquery('english', t)``
  per term, score = sum over matched terms of the BM25 IDF
  ``ln(1 + (N - df + 0.5) / (df + 0.5))`` times ``1 + ts_rank(document, t, 32)``
  (term frequency, saturated, file-name words weighted 'A'); ``ts_rank_cd``
  alone has no IDF, so OR'ed terms would rank common words as high as rare ones.
  Both stem English words ("zebras" finds "zebra"); Postgres also drops English
  stop words ("the"), FTS5 keeps them (their IDF is low).
* **Bounded work, rare words first.** Scoring costs per matching row (~2.6 us in
  FTS5: a word in 70% of 1M passages took 1.8 s). Each term's document count is
  read first, bounded (``LIMIT`` :data:`KEYWORD_SCAN_ROWS` + 1), and terms are
  taken rarest first while their summed counts stay within
  :data:`KEYWORD_SCAN_ROWS`; the remaining, common words (each in more than
  that many rows minus the rarer ones: IDF below ``ln(N / KEYWORD_SCAN_ROWS)``) are left to the vector side of the hybrid,
  which ranks by meaning. A query of common words only ranks the items holding
  *all* of them, among the first :data:`KEYWORD_SCAN_ROWS` such items (row
  order). Below that many matches in all, nothing changes: every term is scored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
from sqlalchemy import Connection, bindparam, delete, func, select, text, update
from sqlalchemy.orm import Session

from .models import Embedding, File, Item, Run, State, Thumbnail, index_name, split_index_name, utcnow


@dataclass(frozen=True)
class KnownFile:
    id: int
    size: int
    mtime_ns: int
    sha256: str | None
    status: str
    error: str | None = None
    dev: int | None = None
    inode: int | None = None


@dataclass(frozen=True)
class NewItem:
    modality: str
    vector: np.ndarray
    start_s: float | None = None
    end_s: float | None = None
    content: str | None = None
    extra: dict | None = None
    view: str | None = None  # video segments: "frame" | "speech"
    thumbnail: bytes | None = None  # a keyframe's JPEG


# ---------------------------------------------------------------- state
def get_state(s: Session) -> State:
    state = s.get(State, 1)
    if state is None:
        state = State(id=1, model=None, checksums=None, revision=0)
        s.add(state)
        s.flush()
    return state


def bump_revision(s: Session) -> int:
    state = get_state(s)
    state.revision = int(state.revision) + 1
    return state.revision


def set_model(s: Session, model: str, checksums: dict[str, str]) -> None:
    state = get_state(s)
    state.model, state.checksums = model, dict(checksums)


# ---------------------------------------------------------------- files
def known_files_under(s: Session, roots: Sequence[str]) -> dict[str, KnownFile]:
    """Files recorded at or below any of ``roots`` (absolute paths)."""
    out: dict[str, KnownFile] = {}
    for root in roots:
        prefix = root.rstrip("/") + "/"
        q = select(File.path, File.id, File.size, File.mtime_ns, File.sha256, File.status, File.error, File.dev,
                   File.inode).where((File.path == root) | File.path.startswith(prefix, autoescape=True))
        for path, fid, size, mtime, sha, status, error, dev, inode in s.execute(q):
            out[path] = KnownFile(fid, size, mtime, sha, status, error, dev, inode)
    return out


def touch_file(s: Session, file_id: int, size: int, mtime_ns: int, dev: int | None = None,
               inode: int | None = None) -> None:
    values: dict = {"size": size, "mtime_ns": mtime_ns}
    if dev is not None and inode is not None:
        values.update(dev=_int64(dev), inode=_int64(inode))
    s.execute(update(File).where(File.id == file_id).values(**values))


def _int64(value: int) -> int:
    """An unsigned 64-bit st_dev/st_ino as a signed BIGINT (``indexer.sources.as_int64``)."""
    value = int(value)
    return value - (1 << 64) if value >= 1 << 63 else value


def error_paths_under(s: Session, roots: Sequence[str]) -> set[str]:
    """Paths at or below ``roots`` recorded as errors."""
    out: set[str] = set()
    for root in roots:
        prefix = root.rstrip("/") + "/"
        q = select(File.path).where(File.status == "error",
                                    (File.path == root) | File.path.startswith(prefix, autoescape=True))
        out |= {p for (p,) in s.execute(q)}
    return out


def item_ids_of_files(s: Session, file_ids: Iterable[int]) -> list[tuple[int, str]]:
    """(item id, index name) of the items of files (see :func:`indexer.models.index_name`)."""
    ids = list(file_ids)
    out: list[tuple[int, str]] = []
    for chunk in _chunks(ids, 500):
        q = select(Item.id, Item.modality, Item.view).where(Item.file_id.in_(chunk))
        out += [(i, index_name(m, v)) for i, m, v in s.execute(q)]
    return out


def delete_items_of_files(s: Session, file_ids: Iterable[int]) -> list[tuple[int, str]]:
    """Delete the items (and embeddings, thumbnails) of files; returns (item id, index name) removed."""
    removed = item_ids_of_files(s, file_ids)
    for chunk in _chunks([i for i, _ in removed], 500):
        s.execute(delete(Embedding).where(Embedding.item_id.in_(chunk)))
        s.execute(delete(Thumbnail).where(Thumbnail.item_id.in_(chunk)))
        s.execute(delete(Item).where(Item.id.in_(chunk)))
    return removed


def delete_files(s: Session, file_ids: Sequence[int]) -> list[tuple[int, str]]:
    removed = delete_items_of_files(s, file_ids)
    for chunk in _chunks(list(file_ids), 500):
        s.execute(delete(File).where(File.id.in_(chunk)))
    return removed


def upsert_file(
    s: Session, *, path: str, file_id: int | None, modality: str | None, size: int, mtime_ns: int,
    sha256: str | None, error: str | None, dev: int | None = None, inode: int | None = None,
) -> File:
    """Insert or update a file row; ``dev``/``inode`` identify the regular file served later (0003)."""
    row = s.get(File, file_id) if file_id is not None else None
    if row is None:
        row = File(path=path)
        s.add(row)
    row.modality, row.size, row.mtime_ns, row.sha256 = modality, size, mtime_ns, sha256
    row.dev = None if dev is None else _int64(dev)
    row.inode = None if inode is None else _int64(inode)
    row.status, row.error, row.indexed_at = ("error" if error else "ok"), error, utcnow()
    s.flush()
    return row


def add_items(s: Session, file_id: int, items: Sequence[NewItem]) -> list[int]:
    rows = [
        Item(file_id=file_id, modality=it.modality, start_s=it.start_s, end_s=it.end_s,
             content=it.content, extra=it.extra, view=it.view)
        for it in items
    ]
    s.add_all(rows)
    s.flush()
    for row, it in zip(rows, items):
        vec = np.ascontiguousarray(it.vector, dtype=np.float32)
        s.add(Embedding(item_id=row.id, dim=int(vec.shape[0]), vector=vec.tobytes()))
        if it.thumbnail:
            s.add(Thumbnail(item_id=row.id, jpeg=it.thumbnail))
    return [r.id for r in rows]


# ---------------------------------------------------------------- reads
def iter_embeddings(s: Session, name: str, batch: int = 20_000,
                    until: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) chunks of every stored embedding of index ``name`` (a modality, or ``video-frame``...), by id
    (``until``: only ids up to it; a second scan of a streaming index rebuild stops where the first did).

    Keyset pagination on ``items.id``, the primary key the modality index is ordered by within one
    modality (SQLite keeps the rowid in every index; Postgres walks ``items``' primary key): each batch
    is read in key order without sorting. Ordering by ``embeddings.item_id`` made SQLite build a
    temporary B-tree of the batch's rows, vectors included, every batch (55 s for 1M vectors). The key range is
    stated on both tables: Postgres merge-joins the two primary keys and, told only ``items.id > last``, walked
    ``embeddings`` from its first row every batch (3 s a batch at 500k, 322 s to read 1M; 30 ms with both).
    """
    modality, view = split_index_name(name)
    same_view = Item.view.is_(None) if view is None else Item.view == view
    upto = [Item.id <= until, Embedding.item_id <= until] if until is not None else []
    last = -1
    while True:
        rows = s.execute(
            select(Item.id, Embedding.vector)
            .join(Embedding, Embedding.item_id == Item.id)
            .where(Item.modality == modality, same_view, Item.id > last, Embedding.item_id > last, *upto)
            .order_by(Item.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
        yield ids, vecs
        last = int(ids[-1])


_ITEM_HITS = text(
    "SELECT items.id, items.modality, items.start_s, items.end_s, items.content, items.extra, files.path, "
    "items.view, items.file_id FROM items JOIN files ON files.id = items.file_id WHERE items.id IN :ids"
).bindparams(bindparam("ids", expanding=True))


def item_hits(s: Session | Connection, ids: Sequence[int]) -> dict[int, dict]:
    """Metadata for search hits, keyed by item id: one statement per 500 ids, on a session or a plain connection
    (the query path passes a connection: no ORM session per request, ~1 ms less at k=100)."""
    out: dict[int, dict] = {}
    for chunk in _chunks([int(i) for i in ids], 500):
        for iid, modality, start, end, content, extra, path, view, fid in s.execute(_ITEM_HITS, {"ids": chunk}):
            if isinstance(extra, (str, bytes)):  # SQLite hands JSON back as text here; Postgres parses it
                extra = None if extra in ("{}", "null") else json.loads(extra)  # most text items: nothing to parse
            out[iid] = {"id": iid, "path": path, "modality": modality, "start": start, "end": end,
                        "content": content, "extra": extra or {}, "view": view, "file_id": fid}
    return out


def item_ids(s: Session, modalities: Iterable[str] | None = None) -> set[int]:
    """Ids of every item (of ``modalities`` when given)."""
    q = select(Item.id)
    if modalities is not None:
        q = q.where(Item.modality.in_(list(modalities)))
    return {int(i) for (i,) in s.execute(q)}


def item_total(s: Session) -> int:
    """How many items the catalog holds."""
    return int(s.execute(select(func.count()).select_from(Item)).scalar_one())


def item_counts(s: Session) -> dict[str, int]:
    """Items per index name (``image``, ..., ``video-frame``, ``video-speech``)."""
    out: dict[str, int] = {}
    for m, v, n in s.execute(select(Item.modality, Item.view, func.count()).group_by(Item.modality, Item.view)):
        out[index_name(m, v)] = out.get(index_name(m, v), 0) + int(n)
    return out


def file_segments(s: Session, file_ids: Sequence[int]) -> dict[int, list[dict]]:
    """Per file: its video segments ``{"id", "view", "start", "end", "spans"}`` in time order; ``spans``:
    a speech window's ASR sentences ``[start, end]`` (where words are heard), empty for keyframes."""
    out: dict[int, list[dict]] = {int(f): [] for f in file_ids}
    for chunk in _chunks(list(out), 500):
        q = (select(Item.file_id, Item.id, Item.view, Item.start_s, Item.end_s, Item.extra)
             .where(Item.file_id.in_(chunk), Item.view.is_not(None)).order_by(Item.start_s, Item.id))
        for fid, iid, view, a, b, extra in s.execute(q):
            spans = [[seg["start"], seg["end"]] for seg in (extra or {}).get("segments") or []
                     if (seg.get("text") or "").strip()]
            out[int(fid)].append({"id": int(iid), "view": view, "start": a, "end": b, "spans": spans})
    return out


def thumbnail(s: Session, item_id: int) -> bytes | None:
    """The stored JPEG of a video keyframe item, or None."""
    return s.execute(select(Thumbnail.jpeg).where(Thumbnail.item_id == item_id)).scalar_one_or_none()


def file_errors(s: Session) -> list[tuple[str, str]]:
    return [(p, e) for p, e in s.execute(select(File.path, File.error).where(File.status == "error").order_by(File.path))]


def start_run(s: Session, model: str) -> int:
    run = Run(model=model)
    s.add(run)
    s.flush()
    return run.id


def finish_run(s: Session, run_id: int, summary: dict) -> None:
    s.execute(update(Run).where(Run.id == run_id).values(finished_at=utcnow(), summary=summary))


def last_run(s: Session) -> Run | None:
    return s.execute(select(Run).order_by(Run.id.desc()).limit(1)).scalar_one_or_none()


def _chunks(seq: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


# ---------------------------------------------------------------- web reads (webui)
def read_state(s: Session) -> tuple[str | None, int] | None:
    """(model, revision) without creating the state row; None for a catalog nothing was written to."""
    row = s.execute(select(State.model, State.revision).where(State.id == 1)).one_or_none()
    return None if row is None else (row[0], int(row[1] or 0))


def item_detail(s: Session, item_id: int) -> dict | None:
    """One item with its file's metadata, or None."""
    row = s.execute(
        select(Item.id, Item.modality, Item.start_s, Item.end_s, Item.content, Item.extra, File.id, File.path,
               File.size, File.mtime_ns, File.sha256, File.indexed_at, File.dev, File.inode)
        .join(File, File.id == Item.file_id)
        .where(Item.id == item_id)
    ).one_or_none()
    if row is None:
        return None
    iid, modality, start, end, content, extra, fid, path, size, mtime_ns, sha, indexed_at, dev, inode = row
    return {"id": iid, "modality": modality, "start": start, "end": end, "content": content, "extra": extra or {},
            "file": {"id": fid, "path": path, "size": size, "mtime_ns": mtime_ns, "sha256": sha,
                     "indexed_at": indexed_at, "dev": dev, "inode": inode}}


def items_of_file(s: Session, file_id: int) -> list[dict]:
    """The items (windows, passages) of one file in order."""
    q = select(Item.id, Item.modality, Item.start_s, Item.end_s, Item.view, Item.content).where(
        Item.file_id == file_id).order_by(Item.start_s, Item.id)
    return [{"id": i, "modality": m, "start": a, "end": b, "view": v, "content": c} for i, m, a, b, v, c in s.execute(q)]


def items_by_file(s: Session) -> list[tuple[str, str, list[tuple[int, float | None, float | None, str | None]]]]:
    """Every indexed file: (path, modality, [(item id, start, end, content), ...]) in item order."""
    q = (select(File.path, Item.modality, Item.id, Item.start_s, Item.end_s, Item.content)
         .join(Item, Item.file_id == File.id).order_by(File.id, Item.start_s, Item.id))
    out: dict[str, tuple[str, str, list]] = {}
    for path, modality, iid, start, end, content in s.execute(q):
        out.setdefault(path, (path, modality, []))[2].append((iid, start, end, content))
    return list(out.values())


def item_embeddings(s: Session, ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Stored unit vectors of ``ids`` (missing ids are absent)."""
    out: dict[int, np.ndarray] = {}
    for chunk in _chunks(list(ids), 500):
        for iid, vec in s.execute(select(Embedding.item_id, Embedding.vector).where(Embedding.item_id.in_(chunk))):
            out[int(iid)] = np.frombuffer(vec, dtype=np.float32).copy()
    return out


def file_counts(s: Session) -> dict[str, dict[str, int]]:
    """Files per status ("ok", "error") and modality (None for an unknown one)."""
    out: dict[str, dict[str, int]] = {}
    for status, modality, n in s.execute(select(File.status, File.modality, func.count()).group_by(File.status, File.modality)):
        out.setdefault(status, {})[modality or "unknown"] = int(n)
    return out


def file_errors_page(s: Session, limit: int, offset: int = 0) -> tuple[int, list[tuple[str, str]]]:
    """(total, a page of (path, error)) of files that could not be indexed, by path."""
    total = s.execute(select(func.count()).select_from(File).where(File.status == "error")).scalar_one()
    rows = s.execute(select(File.path, File.error).where(File.status == "error").order_by(File.path)
                     .limit(limit).offset(offset)).all()
    return int(total), [(p, e) for p, e in rows]


# ---------------------------------------------------------------- keyword search (migration 0002)
MAX_KEYWORD_TERMS = 32
KEYWORD_SCAN_ROWS = 5_000  # matching rows scored per keyword query at most (~10-15 ms in FTS5 on 2 cores)

_SQLITE_DF = "SELECT count(*) FROM (SELECT 1 FROM items_fts WHERE items_fts MATCH :match LIMIT :cap)"
_PG_DF = ("SELECT count(*) FROM (SELECT 1 FROM items_fts WHERE document @@ plainto_tsquery('english', :term) "
          "LIMIT :cap) AS m")

# a query of common words only: the first KEYWORD_SCAN_ROWS items holding all of them, ranked
_SQLITE_ALL_COMMON = """
SELECT rowid, r FROM (
    SELECT items_fts.rowid AS rowid, bm25(items_fts, 1.0, 2.0) AS r
    FROM items_fts CROSS JOIN items ON items.id = items_fts.rowid
    WHERE items_fts MATCH :match {modality}
    LIMIT :cap
)
ORDER BY r, rowid
LIMIT :limit
"""
_PG_ALL_COMMON = """
WITH q AS MATERIALIZED (
    SELECT plainto_tsquery('english', CAST(:words AS text)) AS q
), hits AS MATERIALIZED (
    SELECT d.item_id, ts_rank(d.document, q.q, 32) AS tf
    FROM q JOIN items_fts AS d ON d.document @@ q.q
    JOIN items ON items.id = d.item_id
    WHERE numnode(q.q) > 0 {modality}
    LIMIT :cap
)
SELECT item_id, tf FROM hits ORDER BY tf DESC, item_id LIMIT :limit
"""
_TERM_RE = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits; everything else separates

_SQLITE_KEYWORDS = """
SELECT items_fts.rowid, bm25(items_fts, 1.0, 2.0) AS r
FROM items_fts CROSS JOIN items ON items.id = items_fts.rowid
WHERE items_fts MATCH :match {modality}
ORDER BY r, items_fts.rowid
LIMIT :limit
"""
# CROSS JOIN: SQLite's planner must read the full-text matches first and look their items up; left to choose,
# it walked every item of the modality and probed the full-text index once per item (minutes at 1M)

# MATERIALIZED: computed once (inlined, the planner re-ran the df count per matching row: 4 s at 100k items);
# each term's matches come from one GIN bitmap scan.
_PG_KEYWORDS = """
WITH terms AS MATERIALIZED (
    SELECT DISTINCT plainto_tsquery('english', t) AS q FROM unnest(CAST(:terms AS text[])) AS t
), matches AS MATERIALIZED (
    SELECT d.item_id, t.q, ts_rank(d.document, t.q, 32) AS tf
    FROM terms AS t JOIN items_fts AS d ON d.document @@ t.q
    WHERE numnode(t.q) > 0
), stats AS MATERIALIZED (
    SELECT q, count(*) AS df FROM matches GROUP BY q
), total AS MATERIALIZED (
    SELECT {total} AS n
)
SELECT m.item_id, sum(ln(1 + (total.n - stats.df + 0.5) / (stats.df + 0.5)) * (1 + m.tf)) AS score
FROM matches AS m
JOIN stats ON stats.q = m.q
JOIN items ON items.id = m.item_id
CROSS JOIN total
WHERE true {modality}
GROUP BY m.item_id
ORDER BY score DESC, m.item_id
LIMIT :limit
"""


def keyword_terms(query: str) -> list[str]:
    """The distinct lower-cased words of ``query`` (letters and digits only), in order, at most 32."""
    out: list[str] = []
    for m in _TERM_RE.finditer(query or ""):
        term = m.group(0).lower()
        if term not in out:
            out.append(term)
            if len(out) == MAX_KEYWORD_TERMS:
                break
    return out


def keyword_search(s: Session, query: str, modality: str | None = None, limit: int = 100,
                   total_items: int | None = None, df: Mapping[str, int] | None = None) -> list[tuple[int, float]]:
    """Items whose text or file name holds words of ``query``: (item id, score), best first.

    Scores are higher-is-better and comparable within one call only. Any input is
    safe (no words -> no hits). ``modality`` restricts to image, audio or text items.
    ``total_items``: the catalog's item count, when the caller keeps it (Postgres's BM25 idf needs it; counting
    1M items took 80-90 ms of every hybrid query); None counts them. ``df``: :func:`term_counts` of the terms,
    when the caller keeps them (one common word's bounded count took ~65 ms on Postgres at 1M items).
    """
    terms = keyword_terms(query)
    if not terms or limit <= 0:
        return []
    dialect = s.get_bind().dialect.name
    params: dict = {"limit": int(limit)}
    where = ""
    if modality is not None:
        where, params["modality"] = "AND items.modality = :modality", modality
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"keyword search supports SQLite and PostgreSQL catalogs, not {dialect}")
    rare = selective_terms(s, terms, df)
    if dialect == "sqlite":
        # every term a quoted FTS5 string: no operator, column filter or prefix syntax reaches MATCH
        if rare:
            params["match"] = " OR ".join(f'"{t}"' for t in rare)
            sql = _SQLITE_KEYWORDS
        else:
            params["match"], params["cap"] = " AND ".join(f'"{t}"' for t in terms), KEYWORD_SCAN_ROWS
            sql = _SQLITE_ALL_COMMON
        rows = s.execute(text(sql.format(modality=where)), params).all()
        return [(int(i), -float(r)) for i, r in rows]  # bm25(): lower is better
    if rare:
        params["terms"] = rare
        total = "(SELECT count(*) FROM items)"
        if total_items is not None:
            total, params["total"] = "CAST(:total AS bigint)", int(total_items)
        stmt = text(_PG_KEYWORDS.format(modality=where, total=total)).bindparams(bindparam("terms"))
    else:
        params["words"], params["cap"] = " ".join(terms), KEYWORD_SCAN_ROWS
        stmt = text(_PG_ALL_COMMON.format(modality=where))
    return [(int(i), float(score)) for i, score in s.execute(stmt, params).all()]


def term_counts(s: Session, terms: Sequence[str]) -> dict[str, int]:
    """Per term, how many items hold it, counted up to ``KEYWORD_SCAN_ROWS + 1`` (a bounded scan each)."""
    pg = s.get_bind().dialect.name == "postgresql"
    out = {}
    for t in terms:
        params = {"term": t} if pg else {"match": f'"{t}"'}
        out[t] = int(s.execute(text(_PG_DF if pg else _SQLITE_DF), {**params, "cap": KEYWORD_SCAN_ROWS + 1}).scalar_one())
    return out


def selective_terms(s: Session, terms: Sequence[str], df: Mapping[str, int] | None = None) -> list[str]:
    """The terms a keyword query scores: rarest first while their summed document counts stay within
    :data:`KEYWORD_SCAN_ROWS` (``df``: kept :func:`term_counts`, else counted now); [] when even the rarest is
    more common."""
    missing = [t for t in terms if df is None or t not in df]
    df = {**(df or {}), **(term_counts(s, missing) if missing else {})}
    chosen, total = [], 0
    for t in sorted(terms, key=lambda t: (df[t], terms.index(t))):
        if df[t] == 0:
            continue
        if total + df[t] > KEYWORD_SCAN_ROWS:
            break
        chosen.append(t)
        total += df[t]
    return chosen


def keyword_matches(s: Session, ids: Sequence[int], query: str) -> dict[int, list[str]]:
    """For each of ``ids``, the words of ``query`` its text or file name matched (by the engine's own stemming)."""
    terms = keyword_terms(query)
    ids = [int(i) for i in ids]
    out: dict[int, list[str]] = {i: [] for i in ids}
    if not terms or not ids:
        return out
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        sql = "SELECT rowid FROM items_fts WHERE items_fts MATCH :match AND rowid IN :ids"
        cond = lambda t: {"match": f'"{t}"'}  # noqa: E731
    elif dialect == "postgresql":
        sql = "SELECT item_id FROM items_fts WHERE document @@ plainto_tsquery('english', :term) AND item_id IN :ids"
        cond = lambda t: {"term": t}  # noqa: E731
    else:
        raise ValueError(f"keyword search supports SQLite and PostgreSQL catalogs, not {dialect}")
    stmt = text(sql).bindparams(bindparam("ids", expanding=True))
    for chunk in _chunks(ids, 500):
        for term in terms:
            for (iid,) in s.execute(stmt, {**cond(term), "ids": list(chunk)}):
                out[int(iid)].append(term)
    return out

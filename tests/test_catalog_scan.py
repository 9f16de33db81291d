"""Reading every stored vector back (index rebuilds in the indexer, the CLI and the server) scans in
primary-key order: complete, ascending, and on SQLite without sorting each batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event

from conftest import new_pg_database
from indexer import repository as repo
from indexer.catalog import Catalog


def _fill(catalog: Catalog, n: int) -> dict[str, dict[int, np.ndarray]]:
    """``n`` one-item files through the repository API, modalities interleaved: {modality: {id: vector}}."""
    rng = np.random.default_rng(0)
    out: dict[str, dict[int, np.ndarray]] = {"text": {}, "image": {}}
    with catalog.session() as s:
        for i in range(n):
            modality = "image" if i % 3 == 0 else "text"
            row = repo.upsert_file(s, path=f"/archive/{i}.x", file_id=None, modality=modality, size=1, mtime_ns=1,
                                   sha256=None, error=None)
            vec = rng.standard_normal(8).astype(np.float32)
            (iid,) = repo.add_items(s, row.id, [repo.NewItem(modality, vec, content=f"item {i}")])
            out[modality][iid] = vec
        s.commit()
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request, tmp_path):
    url, drop = new_pg_database("scan") if request.param == "postgres" else (None, lambda: None)
    cat = Catalog(tmp_path / "data", database_url=url)
    yield cat
    cat.close()
    drop()


def test_iter_embeddings_returns_every_vector_once_in_id_order(catalog):
    stored = _fill(catalog, 50)
    with catalog.session() as s:
        for modality, want in stored.items():
            chunks = list(repo.iter_embeddings(s, modality, batch=7))
            assert all(len(ids) <= 7 for ids, _ in chunks) and len(chunks) == -(-len(want) // 7)
            ids = np.concatenate([c[0] for c in chunks])
            vecs = np.concatenate([c[1] for c in chunks])
            assert ids.tolist() == sorted(want)
            np.testing.assert_array_equal(vecs, np.stack([want[i] for i in ids.tolist()]))


def test_sqlite_scan_needs_no_sort_per_batch(tmp_path: Path):
    catalog = Catalog(tmp_path / "data")
    try:
        _fill(catalog, 20)
        seen: list[tuple[str, object]] = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            if "embeddings" in statement and "vector" in statement:
                seen.append((statement, parameters))

        event.listen(catalog.engine, "before_cursor_execute", capture)
        with catalog.session() as s:
            assert sum(len(ids) for ids, _ in repo.iter_embeddings(s, "text", batch=5)) > 5
        event.remove(catalog.engine, "before_cursor_execute", capture)
        assert seen
        raw = catalog.engine.raw_connection()
        try:
            for statement, parameters in seen:
                plan = [row[-1] for row in raw.cursor().execute("EXPLAIN QUERY PLAN " + statement, parameters)]
                assert not any("TEMP B-TREE" in step for step in plan), plan
        finally:
            raw.close()
    finally:
        catalog.close()

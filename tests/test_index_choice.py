"""Which FAISS structure a data directory gets: ``auto`` is chosen by size, again as the collection grows;
only a factory the user typed is kept by later runs.

The real pipeline indexes real notes with the bundled model, in this process, with the size at which
``auto`` leaves exact search lowered from 200k to a handful of vectors (the structure it then picks,
fast-scan PQ with exact re-scoring, is the one a large collection gets).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import retrieval.index as index_module
from conftest import run_json
from indexer.catalog import Catalog
from indexer.pipeline import AddOptions, add

TOPICS = ["gardening tomatoes", "fixing a bicycle chain", "learning the piano", "baking sourdough bread",
          "hiking in the alps", "painting with watercolors", "repairing a leaking tap", "training a puppy"]


def _notes(folder: Path, start: int, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (folder / f"note_{i:03d}.txt").write_text(f"Note {i}: some thoughts about {TOPICS[i % len(TOPICS)]}.")


def _add(src: Path, data: Path, factory: str | None = None) -> dict:
    catalog = Catalog(data)
    try:
        options = AddOptions(progress=False, **({"factory": factory} if factory else {}))  # as the CLI does
        return add([src], catalog, options).as_dict(with_timings=False)
    finally:
        catalog.close()


def _manifest(data: Path) -> dict:
    return json.loads((data / "index" / "text" / "manifest.json").read_text())


@pytest.fixture()
def small_exact_limit(monkeypatch):
    monkeypatch.setattr(index_module, "AUTO_EXACT_LIMIT", 24)
    return index_module.resolve_factory("auto", 10_000, 384)


def test_auto_moves_to_the_fast_index_as_the_collection_grows(tmp_path, small_exact_limit):
    src, data = tmp_path / "notes", tmp_path / "data"
    _notes(src, 0, 10)
    _add(src, data)  # the first run bootstraps an empty index: that must not pin "Flat"
    first = _manifest(data)
    assert first["factory"] == "Flat" and "user_factory" not in first["extra"] and "requested_factory" not in first["extra"]
    _notes(src, 10, 30)  # 40 notes: past the (lowered) exact limit
    assert _add(src, data)["added"] == 30
    grown = _manifest(data)
    assert (grown["factory"], grown["count"]) == (small_exact_limit, 40)
    assert "user_factory" not in grown["extra"]
    for path in sorted(src.glob("*.txt"))[:25]:  # shrinks below the limit: exact again
        path.unlink()
    _add(src, data)
    assert (_manifest(data)["factory"], _manifest(data)["count"]) == ("Flat", 15)


def test_a_typed_factory_is_sticky_until_auto_is_typed(tmp_path, small_exact_limit):
    src, data = tmp_path / "notes", tmp_path / "data"
    _notes(src, 0, 40)
    _add(src, data, factory="Flat")  # typed: exact at any size
    assert (_manifest(data)["factory"], _manifest(data)["extra"]) == ("Flat", {"user_factory": "Flat"})
    _notes(src, 40, 4)
    _add(src, data)  # nothing typed: the earlier choice
    assert _manifest(data)["factory"] == "Flat"
    out = run_json("indexer", "rebuild", "--data-dir", str(data))  # (a subprocess: the real limit, 200k)
    assert out["text"]["factory"] == "Flat"
    _add(src, data, factory="auto")  # typed auto: by size from now on
    assert (_manifest(data)["factory"], _manifest(data)["extra"]) == (small_exact_limit, {})


def test_manifests_of_earlier_versions_read_their_bootstrap_flat_as_auto():
    m = index_module.IndexManifest(model="m", checksums={}, dim=4, factory="Flat", extra={"requested_factory": "Flat"})
    assert m.user_factory() is None and m.requested_factory() == "auto"
    m = index_module.IndexManifest(model="m", checksums={}, dim=4, factory="HNSW32",
                                   extra={"requested_factory": "HNSW32"})
    assert m.user_factory() == "HNSW32"
    assert index_module.choose_factory(None, m) == "HNSW32" and index_module.choose_factory("auto", m) == "auto"

"""Token features (re-ranking) survive a killed `indexer rebuild --tokens`, and missing ones are noticed and
refilled by `indexer status` / `indexer add` (issue 13, item 9)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import REPO, run_json
from retrieval.tokens import TokenStore

MODEL = "triad-mini"  # the first generation: it has a re-ranker, so its items get token features (the default has none)


def _views(i: int) -> dict[str, np.ndarray]:
    return {"text": np.full((2, 4), i, np.float32)}


def _notes(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"note_{i:03d}.txt").write_text(f"Note {i}: thoughts about planting tree number {i} in the park.")


def test_swap_is_finished_or_undone_after_a_kill_at_any_point(tmp_path):
    root = tmp_path / "tokens"
    old = TokenStore(root)
    old.put_many((i, _views(i)) for i in range(5))

    fresh = old.begin_rebuild()  # killed while the new store is being written: the old one stays
    fresh.put_many([(0, _views(100))])
    assert TokenStore(root).ids() == set(range(5))
    assert TokenStore(root).get_many([0])[0]["text"][0, 0] == 0

    fresh = TokenStore(root).begin_rebuild()  # killed between the two renames of the swap
    fresh.put_many((i, _views(i + 10)) for i in range(3))
    (fresh.root / "COMPLETE").write_text("ok")
    root.rename(root.with_name("tokens.old"))
    reopened = TokenStore(root)
    assert reopened.ids() == {0, 1, 2} and reopened.get_many([1])[1]["text"][0, 0] == 11
    assert not root.with_name("tokens.old").exists() and not root.with_name("tokens.new").exists()

    fresh = reopened.begin_rebuild()  # a whole swap
    fresh.put_many([(7, _views(7))])
    reopened.commit_rebuild(fresh)
    assert TokenStore(root).ids() == {7}


def test_killed_token_rebuild_keeps_reranking_and_missing_tokens_are_refilled(tmp_path):
    src, data = tmp_path / "notes", tmp_path / "data"
    _notes(src, 150)
    assert run_json("indexer", "add", str(src), "--data-dir", str(data), "--model", MODEL)["added"] == 150
    tokens = data / "tokens"
    assert len(list(tokens.glob("*/*.tok"))) == 150

    proc = subprocess.Popen([sys.executable, "-m", "indexer", "rebuild", "--tokens", "--data-dir", str(data)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(tmp_path.glob("data/tokens.new/*/*.tok"))) < 5:
        time.sleep(0.05)
    assert proc.poll() is None, f"the rebuild ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(tokens.glob("*/*.tok"))) == 150  # the old store was never deleted
    assert run_json("indexer", "status", "--data-dir", str(data))["tokens_missing"] == 0

    for path in sorted(tokens.glob("*/*.tok"))[:40]:  # as a run killed between commit and token write leaves it
        path.unlink()
    assert run_json("indexer", "status", "--data-dir", str(data))["tokens_missing"] == 40
    out = run_json("indexer", "add", str(src), "--data-dir", str(data))
    assert out["unchanged"] == 150
    assert run_json("indexer", "status", "--data-dir", str(data))["tokens_missing"] == 0
    assert len(list(tokens.glob("*/*.tok"))) == 150
    assert not (data / "tokens.new").exists()


def test_token_refill_encodes_many_files_per_pass_with_the_indexers_result(tmp_path, monkeypatch):
    """`indexer rebuild` refills missing tokens in batches across files (one note per file used to mean one
    forward pass per note), and writes what the indexer itself wrote."""
    from indexer import token_sync
    from indexer.catalog import Catalog
    from retrieval.encoders import create_model

    notes, data = tmp_path / "notes", tmp_path / "data"
    _notes(notes, 40)
    run_json("indexer", "add", str(notes), "--data-dir", str(data), "--model", MODEL)
    store = TokenStore(data / "tokens")
    written_by_indexer = store.get_many(sorted(store.ids()))
    assert len(written_by_indexer) == 40
    kept = min(written_by_indexer)  # as a killed run leaves a store: some items with tokens, the rest without
    store.delete_many(i for i in written_by_indexer if i != kept)
    deferred = run_json("indexer", "rebuild", "--no-tokens", "--data-dir", str(data), "--json")
    assert deferred["text"]["count"] == 40 and deferred["tokens"]["deferred"] == 39 and store.ids() == {kept}
    store.delete_many([kept])
    calls = []
    real = token_sync.item_views
    monkeypatch.setattr(token_sync, "item_views", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    catalog = Catalog(data)
    try:
        out = token_sync.rebuild_tokens(catalog, create_model(MODEL))
    finally:
        catalog.close()
    assert out == {"written": 40, "skipped": 0, "failed": 0}
    assert calls == [token_sync.BATCH, 40 - token_sync.BATCH]  # 2 passes for 40 files
    refilled = TokenStore(data / "tokens").get_many(sorted(written_by_indexer))
    for item_id, views in written_by_indexer.items():
        assert np.allclose(refilled[item_id]["text"], views["text"], atol=2e-2)

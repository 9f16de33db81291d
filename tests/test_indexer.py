"""Indexer: incremental counts, corrupt files, kill -9 + resume, rebuild, model checks, Postgres."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, REPO, run_cli, run_json
from retrieval.encoders.registry import DEFAULT_MODEL
from indexer import repository as repo
from indexer.catalog import Catalog

NOTE_TOPICS = ["gardening tomatoes", "fixing a bicycle chain", "learning the piano", "baking sourdough bread",
               "hiking in the alps", "painting with watercolors", "repairing a leaking tap", "training a puppy"]


def _write_notes(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"note_{i:03d}.txt").write_text(f"Note {i}: some thoughts about {NOTE_TOPICS[i % len(NOTE_TOPICS)]}.")


def _state(data_dir: Path) -> tuple[set, dict[str, set[int]]]:
    """(set of (relative path, modality, start, content)), and FAISS ids vs DB ids per modality must agree."""
    catalog = Catalog(data_dir)
    try:
        indices = catalog.fresh_indices()
        rows = set()
        by_modality: dict[str, set[int]] = {}
        with catalog.session() as s:
            for modality in ("image", "audio", "text"):
                db_ids = set()
                for ids, _ in repo.iter_embeddings(s, modality):
                    db_ids |= set(ids.tolist())
                if db_ids or modality in indices:
                    assert set(indices[modality].ids().tolist()) == db_ids, f"{modality}: index and database disagree"
                    by_modality[modality] = db_ids
                for iid, meta in repo.item_hits(s, sorted(db_ids)).items():
                    rows.add((Path(meta["path"]).name, modality, meta["start"], meta["content"]))
            paths = [p for p, _ in repo.known_files_under(s, ["/"]).items()]
            assert len(paths) == len(set(paths))
    finally:
        catalog.close()
    return rows, by_modality


@pytest.fixture()
def archive(tmp_path) -> Path:
    root = tmp_path / "archive"
    shutil.copytree(FIXTURES / "notes", root / "notes")
    (root / "audio").mkdir()
    for name in ("dog_park.wav", "heavy_rain.wav"):
        shutil.copy(FIXTURES / "speech" / name, root / "audio" / name)
    (root / "bad").mkdir()
    for name in ("truncated.png", "empty.wav", "random.mp3", "latin1.txt"):
        shutil.copy(FIXTURES / "corrupt" / name, root / "bad" / name)
    (root / "images").mkdir()
    shutil.copy(FIXTURES / "formats" / "sample.png", root / "images" / "sample.png")
    shutil.copy(FIXTURES / "formats" / "jpeg_named.png", root / "images" / "jpeg_named.png")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("hidden files are not indexed")
    (root / "readme.pdf").write_bytes(b"%PDF-1.4 not ours")
    return root


def test_incremental_runs_count_right(archive, tmp_path, tiny_openclip):
    data = tmp_path / "data"
    model = f"openclip:{tiny_openclip}"
    n_notes = len(list((FIXTURES / "notes").iterdir()))
    first = run_json("indexer", "add", str(archive), "--data-dir", str(data), "--model", model)
    # notes + 2 clips + latin1 note + 2 images; truncated PNG, empty WAV, random bytes .mp3 fail
    assert {k: first[k] for k in ("added", "updated", "unchanged", "removed", "errors")} == \
        {"added": n_notes + 5, "updated": 0, "unchanged": 0, "removed": 0, "errors": 3}
    assert {"scan_s", "decode_s", "encode_s", "write_s", "total_s"} <= set(first["timings"])

    errors = run_json("indexer", "errors", "--data-dir", str(data))["errors"]
    assert sorted(Path(e["path"]).name for e in errors) == ["empty.wav", "random.mp3", "truncated.png"]
    assert all(e["path"] in e["error"] for e in errors)

    second = run_json("indexer", "add", str(archive), "--data-dir", str(data))
    assert {k: second[k] for k in ("added", "updated", "unchanged", "removed", "errors")} == \
        {"added": 0, "updated": 0, "unchanged": n_notes + 8, "removed": 0, "errors": 0}

    notes = sorted((archive / "notes").iterdir())
    notes[0].write_text("This note was rewritten to talk about volcanoes erupting.")
    os.utime(notes[1], None)  # touched, same content: still unchanged
    (archive / "audio" / "heavy_rain.wav").unlink()
    (archive / "notes" / "new_note.txt").write_text("A brand new note about sailing boats.")
    third = run_json("indexer", "add", str(archive), "--data-dir", str(data))
    assert {k: third[k] for k in ("added", "updated", "unchanged", "removed", "errors")} == \
        {"added": 1, "updated": 1, "unchanged": n_notes + 6, "removed": 1, "errors": 0}

    rows, by_modality = _state(data)
    names = {r[0] for r in rows}
    assert "heavy_rain.wav" not in names and {"new_note.txt", "dog_park.wav", "latin1.txt", "sample.png"} <= names
    assert "secret.txt" not in names and "readme.pdf" not in names
    assert any("volcanoes" in (r[3] or "") for r in rows)
    assert any("Café" in (r[3] or "") for r in rows if r[0] == "latin1.txt")
    assert len(by_modality["image"]) == 2


def test_kill_9_then_resume_equals_clean_run(tmp_path):
    src = tmp_path / "notes"
    _write_notes(src, 240)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = [sys.executable, "-m", "indexer", "add", str(src), "--data-dir", str(killed), "--batch-size", "1", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = killed / "catalog.sqlite3"
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                committed = conn.execute("select count(*) from files").fetchone()[0]
        except sqlite3.Error:
            committed = 0
        if committed >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 20 <= committed < 240

    resumed = run_json("indexer", "add", str(src), "--data-dir", str(killed), "--batch-size", "1")
    assert resumed["errors"] == 0 and resumed["added"] + resumed["unchanged"] == 240
    assert resumed["unchanged"] >= 20
    run_json("indexer", "add", str(src), "--data-dir", str(clean))
    killed_rows, killed_ids = _state(killed)
    clean_rows, clean_ids = _state(clean)
    assert killed_rows == clean_rows
    assert len(killed_ids["text"]) == len(clean_ids["text"]) == 240


def test_rebuild_from_stored_embeddings_and_stale_index_recovery(tmp_path):
    src, data = tmp_path / "notes", tmp_path / "data"
    _write_notes(src, 16)
    run_json("indexer", "add", str(src), "--data-dir", str(data))
    before = run_json("retrieval", "search", "--text", "how to fix a bike chain", "--target", "text", "-k", "3",
                      "--data-dir", str(data))["hits"]
    assert "bicycle" in Path(before[0]["path"]).read_text()

    shutil.rmtree(data / "index")
    out = run_json("indexer", "rebuild", "--data-dir", str(data), "--index-factory", "HNSW32")
    assert out["text"] == {"count": 16, "factory": "HNSW32"}
    after = run_json("retrieval", "search", "--text", "how to fix a bike chain", "--target", "text", "-k", "3",
                     "--data-dir", str(data))["hits"]
    assert [h["id"] for h in after] == [h["id"] for h in before]

    # an index older than the database (as after a crash) is rebuilt, not trusted
    manifest = data / "index" / "text" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"revision": ', '"revision": 1000'))
    again = run_json("retrieval", "search", "--text", "how to fix a bike chain", "--target", "text", "-k", "3",
                     "--data-dir", str(data))["hits"]
    assert [h["id"] for h in again] == [h["id"] for h in before]


def test_other_model_on_existing_data_dir_is_refused(tmp_path, tiny_openclip):
    src, data = tmp_path / "notes", tmp_path / "data"
    _write_notes(src, 3)
    run_json("indexer", "add", str(src), "--data-dir", str(data))
    proc = run_cli("indexer", "add", str(src), "--data-dir", str(data), "--model", f"openclip:{tiny_openclip}",
                   check=False)
    assert proc.returncode == 2
    assert f"was indexed with model '{DEFAULT_MODEL}'" in proc.stderr and "--data-dir" in proc.stderr
    proc = run_cli("retrieval", "search", "--text", "piano", "--data-dir", str(data), "--model",
                   "openclip:ViT-B-32/laion2b_s34b_b79k", check=False)
    assert proc.returncode == 2 and f"built with model '{DEFAULT_MODEL}'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_path_and_empty_query_are_clear_errors(tmp_path):
    proc = run_cli("indexer", "add", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "d"), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run_cli("retrieval", "search", "--text", "x", "--data-dir", str(tmp_path / "empty"), check=False)
    assert proc.returncode == 2 and "indexer add" in proc.stderr
    proc = run_cli("retrieval", "search", "--data-dir", str(tmp_path / "empty"), check=False)
    assert proc.returncode == 2 and "--text" in proc.stderr


def test_postgres_catalog_end_to_end(tmp_path, pg_url):
    src, data = tmp_path / "notes", tmp_path / "data"
    _write_notes(src, 8)
    env = {"DATABASE_URL": pg_url}
    first = run_json("indexer", "add", str(src), "--data-dir", str(data), env=env)
    assert first["added"] == 8 and first["errors"] == 0
    assert not (data / "catalog.sqlite3").exists()
    (src / "note_000.txt").unlink()
    second = run_json("indexer", "add", str(src), "--data-dir", str(data), env=env)
    assert (second["removed"], second["unchanged"]) == (1, 7)
    hits = run_json("retrieval", "search", "--text", "learning to play piano", "--target", "text", "-k", "2",
                    "--data-dir", str(data), env=env)["hits"]
    assert "piano" in Path(hits[0]["path"]).read_text()
    status = run_json("indexer", "status", "--data-dir", str(data), env=env)
    assert status["items"] == {"text": 7} and status["model"] == DEFAULT_MODEL


def test_chosen_index_factory_is_kept_without_rebuilding_each_run(tmp_path):
    src, data = tmp_path / "notes", tmp_path / "data"
    _write_notes(src, 12)
    run_json("indexer", "add", str(src), "--data-dir", str(data), "--index-factory", "HNSW32")
    index_file = data / "index" / "text" / "index.faiss"
    manifest = json.loads((data / "index" / "text" / "manifest.json").read_text())
    assert manifest["factory"] == "HNSW32"
    built = index_file.stat().st_mtime_ns
    run_json("indexer", "add", str(src), "--data-dir", str(data))  # nothing changed, factory "auto"
    assert json.loads((data / "index" / "text" / "manifest.json").read_text())["factory"] == "HNSW32"
    (src / "note_000.txt").unlink()  # HNSW cannot remove ids in place: a tombstone, not a rebuild (same factory)
    out = run_json("indexer", "add", str(src), "--data-dir", str(data))
    assert out["removed"] == 1
    manifest = json.loads((data / "index" / "text" / "manifest.json").read_text())
    assert (manifest["factory"], manifest["count"], manifest["extra"]["tombstones"]) == ("HNSW32", 11, 1)
    assert index_file.stat().st_mtime_ns == built  # compaction waits for 10% dead (tests/test_tombstones.py)

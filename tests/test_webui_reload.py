"""A new indexer run reloads only what changed: an indexer run that only adds notes makes the web app load the
new text index from disk (no rebuild from SQL) and keep its image index object."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

from webui import create_app  # noqa: E402


def test_only_the_changed_modality_is_reloaded_and_nothing_is_rebuilt(tmp_path, tiny_openclip):
    archive, data = tmp_path / "archive", tmp_path / "data"
    wt.shape_images(archive / "photos", 4)
    (archive / "notes").mkdir()
    (archive / "notes" / "garden.txt").write_text("Tomatoes and basil grow in the garden.")
    model = f"openclip:{tiny_openclip}"
    wt.index_folder(archive, data, model=model)
    app = create_app({"DATA_DIR": str(data), "TESTING": True, "RELOAD_CHECK_SECONDS": 0})
    engine = app.extensions["webui.engine"]
    client = app.test_client()
    assert client.post("/api/search", json={"text": "garden", "k": 1}).status_code == 200
    first = engine.snapshot().service.searcher.indices
    assert engine.reloads == {"loaded": 2, "kept": 0, "rebuilt": 0}
    assert first["image"].mapped and first["text"].mapped  # workers share the files' pages (issue 14 part 3)
    image_file = data / "index" / "image" / "index.faiss"
    image_inode = image_file.stat().st_ino

    for n in range(3):  # three runs that only add notes
        (archive / "notes" / f"note{n}.txt").write_text(f"Note number {n} about the lighthouse keeper.")
        assert wt.index_folder(archive, data, model=model)["added"] == 1
        hits = client.post("/api/search", json={"text": f"Note number {n} lighthouse", "k": 1}).get_json()["hits"]
        assert hits[0]["name"] == f"note{n}.txt"
    now = engine.snapshot().service.searcher.indices
    assert now["image"] is first["image"], "the unchanged image index was reloaded"
    assert image_file.stat().st_ino == image_inode, "runs that only add notes rewrote the image index file"
    assert now["text"] is not first["text"] and now["text"].count == 4
    assert engine.reloads == {"loaded": 2 + 3, "kept": 3, "rebuilt": 0}

    manifest_path = data / "index" / "text" / "manifest.json"  # a run killed before its save: text lags
    manifest = json.loads(manifest_path.read_text())
    manifest["revision"] -= 1
    manifest_path.write_text(json.dumps(manifest))
    fresh = create_app({"DATA_DIR": str(data), "TESTING": True}).extensions["webui.engine"]
    fresh.snapshot()
    assert fresh.reloads == {"loaded": 1, "kept": 0, "rebuilt": 1}  # only the stale one from SQL


def test_mid_run_commits_keep_untouched_modalities_fresh(tmp_path, tiny_openclip, monkeypatch):
    """While an indexer run commits notes batch by batch (saving its indices only every 30 s), the image
    index on disk stays fresh at every new revision: a web worker reloading mid-run keeps it instead of
    rebuilding it from SQL (issue 13 item 11). Only the text index, which changed, lags until the save."""
    from indexer.catalog import Catalog
    from indexer.pipeline import AddOptions, add
    from indexer.writer import Writer

    archive, data = tmp_path / "archive", tmp_path / "data"
    wt.shape_images(archive / "photos", 3)
    (archive / "notes").mkdir()
    (archive / "notes" / "first.txt").write_text("The first note.")
    model = f"openclip:{tiny_openclip}"
    wt.index_folder(archive, data, model=model)
    for n in range(4):
        (archive / "notes" / f"n{n}.txt").write_text(f"Note {n} about the lighthouse keeper.")

    seen: list[tuple[int, bool, bool]] = []
    applied = Writer._apply_committed

    def spy(self, *args):  # observe the catalog right after each commit is mirrored
        applied(self, *args)
        seen.append((self.revision, self.catalog.index_is_fresh("image", self.revision),
                     self.catalog.index_is_fresh("text", self.revision)))

    monkeypatch.setattr(Writer, "_apply_committed", spy)
    catalog = Catalog(data)
    try:
        summary = add([archive], catalog, AddOptions(model=model, batch_size=1, save_every_s=3600, progress=False))
        assert summary.added == 4
        assert len(seen) == 4 and all(image for _, image, _ in seen), seen
        assert not any(text for _, _, text in seen), seen  # the changed modality is stale until saved...
        revision = catalog.state()[2]
        assert catalog.index_is_fresh("image", revision) and catalog.index_is_fresh("text", revision)  # ...and then not
    finally:
        catalog.close()

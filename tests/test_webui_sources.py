"""Serving indexed files (Flask test client): only while a path is still the regular file that was indexed;
an upload with an odd sample rate is decoded within bounded memory."""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

from webui import create_app  # noqa: E402


@pytest.fixture()
def archive(tmp_path, tiny_openclip):
    """Generated pictures indexed with the tiny OpenCLIP model (a private copy: this test replaces files)."""
    root = tmp_path / "archive"
    wt.shape_images(root / "photos", n=3)
    data = tmp_path / "data"
    summary = wt.index_folder(root, data, model=f"openclip:{tiny_openclip}")
    assert summary["added"] == 3, summary
    return root, data


def _client(data: Path, tmp_path: Path):
    app = create_app({"DATA_DIR": str(data), "TESTING": True, "THUMBNAIL_DIR": str(tmp_path / "thumbs")})
    return app.test_client()


def _item_of(data: Path, name: str) -> int:
    from indexer import repository as repo
    from indexer.catalog import Catalog

    catalog = Catalog(data)
    try:
        with catalog.session() as s:
            hits = repo.item_hits(s, range(1, 100))
    finally:
        catalog.close()
    return next(i for i, h in hits.items() if Path(h["path"]).name == name)


def test_picture_replaced_by_a_link_out_of_the_archive_is_not_served(archive, tmp_path, tiny_openclip):
    root, data = archive
    client = _client(data, tmp_path)
    item = _item_of(data, "shape_0.png")
    assert client.get(f"/api/items/{item}/media").status_code == 200
    assert client.get(f"/api/items/{item}/thumbnail?size=256").status_code == 200

    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "private.png"
    shutil.copy(root / "photos" / "shape_1.png", secret)
    (root / "photos" / "shape_0.png").unlink()
    os.symlink(secret, root / "photos" / "shape_0.png")
    for url in (f"/api/items/{item}/media", f"/api/items/{item}/thumbnail?size=128"):
        resp = client.get(url)
        assert resp.status_code == 404, url
        err = resp.get_json()["error"]
        assert err["code"] == "file_changed" and "replaced by a link" in err["message"] and "indexer add" in err["message"]

    # a copy with the same bytes, size and mtime is still another file (inode) until it is indexed again
    other = _item_of(data, "shape_2.png")
    path = root / "photos" / "shape_2.png"
    st = path.stat()
    shutil.copy(path, tmp_path / "copy.png")
    path.unlink()
    shutil.move(tmp_path / "copy.png", path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert client.get(f"/api/items/{other}/media").status_code == 404
    summary = wt.index_folder(root, data, model=f"openclip:{tiny_openclip}")
    assert summary["unchanged"] == 2 and summary["errors"] == 1, summary  # the link is recorded, not indexed
    assert client.get(f"/api/items/{other}/media").status_code == 200


def test_upload_at_a_sample_rate_coprime_with_16k(archive, tmp_path):
    """96,001 Hz made the resampler allocate ~6 GB per step and killed the worker (the clip: a spoken fixture)."""
    import resource

    _, data = archive
    client = _client(data, tmp_path)
    speech, rate = sf.read(wt.FIXTURES / "speech" / "dog_park.wav", dtype="float32")
    t = np.arange(int(len(speech) * 96001 / rate)) / 96001
    buf = io.BytesIO()
    sf.write(buf, np.interp(t, np.arange(len(speech)) / rate, speech).astype(np.float32), 96001,
             format="WAV", subtype="PCM_16")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    resp = client.post("/api/search", data={"file": [(io.BytesIO(buf.getvalue()), "odd.wav")], "target": "image"},
                       content_type="multipart/form-data")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert resp.status_code == 200, resp.get_json()
    assert "dog" in resp.get_json()["query"]["inputs"][0]["transcript"].lower()
    assert grown_mb < 1500, f"peak RSS grew by {grown_mb:.0f} MB for a 32 KB upload"

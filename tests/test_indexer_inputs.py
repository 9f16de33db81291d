"""Indexer inputs that are not plain media files: FIFOs, device links, links out of the archive, dangling
links and loops, unreadable folders, file names that are not UTF-8, text the database cannot store.
Each is one file's recorded error with what to do; the run goes on and the good files are indexed."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli, run_json
from indexer import repository as repo
from indexer.catalog import Catalog


def _errors(data: Path, env: dict | None = None) -> dict[str, str]:
    return {Path(e["path"]).name: e["error"] for e in run_json("indexer", "errors", "--data-dir", str(data),
                                                                 env=env)["errors"]}


def _contents(data: Path) -> dict[str, str]:
    with sqlite3.connect(data / "catalog.sqlite3") as conn:
        rows = conn.execute("select f.path, i.content from items i join files f on f.id = i.file_id").fetchall()
    return {Path(p).name: c for p, c in rows}


def test_fifos_device_links_and_links_out_of_the_archive_are_recorded_never_opened(tmp_path):
    root, data = tmp_path / "archive", tmp_path / "data"
    root.mkdir()
    (root / "good.txt").write_text("A note about planting tulips in autumn.")
    os.mkfifo(root / "x.wav")  # open() would block forever
    os.symlink("/dev/zero", root / "zero.wav")  # hashing would never end
    os.symlink("/dev/urandom", root / "random.md")
    os.symlink("/etc/shadow", root / "shadow.md")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("the launch code is swordfish")
    os.symlink(outside / "secret.md", root / "x.md")
    os.symlink(root / "good.txt", root / "inside.txt")  # a link that stays inside is indexed
    os.symlink(root / "missing.png", root / "dangling.png")
    os.symlink(root / "loop_b.jpg", root / "loop_a.jpg")
    os.symlink(root / "loop_a.jpg", root / "loop_b.jpg")

    proc = subprocess.run([sys.executable, "-m", "indexer", "add", str(root), "--data-dir", str(data), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = _errors(data)
    assert "not a regular file" in errors["x.wav"] and "FIFO" in errors["x.wav"]
    for name in ("zero.wav", "random.md", "shadow.md", "x.md"):
        assert "outside the indexed folders" in errors[name] and "replace the link" in errors[name], name
    assert "dangling link" in errors["dangling.png"]
    assert "link loop" in errors["loop_a.jpg"] and "link loop" in errors["loop_b.jpg"]
    contents = _contents(data)
    assert set(contents) == {"good.txt", "inside.txt"}
    assert not any("swordfish" in (c or "") or "root:" in (c or "") for c in contents.values())
    with sqlite3.connect(data / "catalog.sqlite3") as conn:  # nor in the keyword index
        assert conn.execute("select count(*) from items_fts where items_fts match 'swordfish'").fetchone()[0] == 0

    again = run_json("indexer", "add", str(root), "--data-dir", str(data))
    assert (again["errors"], again["known_errors"], again["added"]) == (0, 8, 0)
    human = run_cli("indexer", "add", str(root), "--data-dir", str(data), "--quiet").stdout
    assert "errors 0 (+8 still broken from earlier runs)" in human and "indexer errors" in human


def test_file_names_that_are_not_utf8_are_per_file_errors(tmp_path):
    root, data = tmp_path / "archive", tmp_path / "data"
    root.mkdir()
    (root / "good.txt").write_text("A note about sailing boats.")
    bad = os.path.join(os.fsencode(root), b"caf\xe9 notes.txt")
    with open(bad, "wb") as f:
        f.write(b"A note whose name is Latin-1.")
    (root / "sub").mkdir()
    os.mkdir(os.path.join(os.fsencode(root), b"dir\xff"))
    with open(os.path.join(os.fsencode(root), b"dir\xff", b"inner.txt"), "wb") as f:
        f.write(b"inside a folder whose name is not UTF-8")
    first = run_json("indexer", "add", str(root), "--data-dir", str(data))
    assert (first["added"], first["errors"]) == (1, 2)
    errors = _errors(data)
    assert "caf\\xe9 notes.txt" in errors and "not valid UTF-8" in errors["caf\\xe9 notes.txt"]
    assert "convmv" in errors["caf\\xe9 notes.txt"]
    assert "inner.txt" in errors
    second = run_json("indexer", "add", str(root), "--data-dir", str(data))
    assert (second["errors"], second["known_errors"], second["unchanged"]) == (0, 2, 1)


def test_missing_path_creates_no_catalog(tmp_path):
    data = tmp_path / "d"
    proc = run_cli("indexer", "add", str(tmp_path / "nope"), "--data-dir", str(data), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not data.exists()


@pytest.fixture()
def world_tmp():
    """A folder an unprivileged user can reach (pytest's tmp_path is under a root-only 0700 folder)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="indexer_nobody_", dir="/tmp"))
    path.chmod(0o777)
    yield path
    for p in path.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


def test_unreadable_folder_is_recorded(world_tmp):
    """Run without root's power to read every folder (the capabilities dropped; the user stays root, so the
    checkout, which CI keeps in a private temporary folder, is still readable)."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run the indexer as an unprivileged user")
    tmp_path = world_tmp
    root, data = tmp_path / "archive", tmp_path / "data"
    (root / "locked").mkdir(parents=True)
    (root / "good.txt").write_text("A note about violins.")
    (root / "locked" / "inner.txt").write_text("unreachable")
    for p in (tmp_path, root, root / "good.txt"):
        p.chmod(0o777 if p.is_dir() else 0o666)
    (root / "locked").chmod(0)
    data.mkdir()
    data.chmod(0o777)
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "indexer", "add",
           str(root), "--data-dir", str(data), "--json"]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    (root / "locked").chmod(0o755)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = _errors(data)
    assert "folder cannot be read" in errors["locked"] and "chmod" in errors["locked"]
    assert set(_contents(data)) == {"good.txt"}


def test_text_the_database_refuses_is_that_files_error_on_postgres(tmp_path, pg_url):
    """A NUL past the first 4 kB: the decoder drops it; a NUL that reaches the database anyway (here put
    into a unit directly) makes Postgres refuse the batch, and only that file is recorded as an error."""
    from indexer.scanner import Candidate
    from indexer.writer import Decoded, Summary, Unit, Writer
    from retrieval.encoders import create_model

    root, data = tmp_path / "archive", tmp_path / "data"
    root.mkdir()
    (root / "nul.txt").write_bytes(b"word " * 1000 + b"\x00 after the first four kilobytes")
    (root / "good.txt").write_text("A note about sourdough.")
    out = run_json("indexer", "add", str(root), "--data-dir", str(data), env={"DATABASE_URL": pg_url})
    assert (out["added"], out["errors"]) == (2, 0)

    catalog = Catalog(data, database_url=pg_url)
    try:
        model = create_model(None)  # the default, which indexed this catalog
        writer = Writer(catalog, model, catalog.fresh_indices(), "auto")
        vec = np.ones(model.dim, np.float32) / np.sqrt(model.dim)
        batch = []
        for name, text in (("bad.txt", "nul \x00 inside"), ("fine.txt", "fine")):
            (root / name).write_text(text.replace("\x00", ""))
            st = (root / name).stat()
            d = Decoded(Candidate(str(root / name), "text", st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino), None,
                        sha256="0" * 64, units=[Unit("text", text, content=text, vector=vec)])
            batch.append(d)
        summary = Summary()
        writer.write(batch, summary)
        assert (summary.added, summary.errors) == (1, 1)
        with catalog.session() as s:
            errors = dict(repo.file_errors(s))
        assert "refused" in errors[str(root / "bad.txt")] and "rename or clean it" in errors[str(root / "bad.txt")]
    finally:
        catalog.close()


def test_openclip_model_offline_fails_in_seconds_with_the_fix(tmp_path):
    """No network here: the download used to retry ~24 times (~60 s) before its message. "cannot be reached"
    comes only from the probe that runs before any download, so the message proves no retry loop ran (no
    wall-clock assertion: timings belong in bench/, and a loaded machine made this one flaky)."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("A note.")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    proc = subprocess.run([sys.executable, "-m", "indexer", "add", str(notes), "--data-dir", str(tmp_path / "d"),
                           "--model", "openclip:ViT-B-32/laion2b_s34b_b79k"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "ViT-B-32/laion2b_s34b_b79k" in proc.stderr and "cannot be reached" in proc.stderr
    assert "could not download" not in proc.stderr  # the download (and its retries) never started
    assert "Hugging Face cache" in proc.stderr and "Traceback" not in proc.stderr

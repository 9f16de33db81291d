"""A malformed corpus generated here (truncations, zero-byte files, wrong magic, decompression bombs, absurd
headers, bad encodings, odd names, FIFOs, device links, odd sample rates) beside good files: the run
completes, each bad file is recorded with a message that says what to do, every good file is indexed, and
the indexer's peak RSS stays under a bound (issue 13)."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from conftest import FIXTURES, REPO, run_json

PEAK_RSS_MB = 2048  # measured 1.2 GB (torch, the text tower, Whisper tiny, the speech head)
WHAT_TO_DO = re.compile(r"re-save|re-encode|rename|delete|replace|split|downscale|save it|restore|check|fix|"
                        r"write the note|point it")


def build_corpus(root: Path, fix: Path) -> tuple[Path, Path]:
    """``root/good`` (12 files that must be indexed) and ``root/bad`` (25 entries that must be recorded)."""
    good, bad = root / "good", root / "bad"
    good.mkdir(parents=True); bad.mkdir(parents=True)
    (good / "tulips.txt").write_text("Planting tulip bulbs in autumn for spring flowers.")
    (good / "ünïcödé name with spaces.md").write_text("A note whose name has accents and spaces.")
    (good / "-rf.txt").write_text("A note whose name starts with a dash.")
    (good / ("long" + "x" * 240 + ".txt")).write_text("A note with a very long name.")
    (good / "new\nline.txt").write_text("A note with a newline in its name.")
    (good / "cyrillic.txt").write_bytes("Привет, это заметка о погоде и дожде.".encode("cp1251"))
    (good / "bad_utf8.txt").write_bytes(b"Mostly fine text with one bad byte \xff here, about sailing.")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(good / "red.png")
    Image.new("RGB", (64, 48), (30, 30, 200)).save(good / "blue.jpg")
    (good / "speech.wav").write_bytes((fix / "speech" / "dog_park.wav").read_bytes())
    x, sr = sf.read(fix / "speech" / "red_apple.wav", dtype="float32")
    t = np.arange(int(len(x) * 44101 / sr)) / 44101
    sf.write(good / "odd_rate_44101.wav", np.interp(t, np.arange(len(x)) / sr, x).astype(np.float32), 44101, subtype="PCM_16")
    # ---- bad
    buf = io.BytesIO(); Image.new("RGB", (256, 256), (1, 2, 3)).save(buf, "PNG"); png = buf.getvalue()
    (bad / "truncated.png").write_bytes(png[: len(png) // 2])
    buf = io.BytesIO(); Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)).save(buf, "JPEG"); jpg = buf.getvalue()
    (bad / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    for name in ("zero.png", "zero.wav", "zero.txt", "zero.mp3"):
        (bad / name).write_bytes(b"")
    (bad / "random.jpg").write_bytes(np.random.default_rng(1).bytes(5000))
    (bad / "random.wav").write_bytes(np.random.default_rng(2).bytes(5000))
    def chunk(kind, data): return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * (1 << 20), 9)) + chunk(b"IEND", b"")
    (bad / "bomb.png").write_bytes(bomb)
    (bad / "absurd_header.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    # WAV that claims 1 Hz, one that claims 96001 Hz (32 KB), one claiming far more data than it holds, one with 0 channels
    sf.write(bad / "one_hz.wav", np.zeros(100, np.float32), 1, subtype="PCM_16")
    sf.write(good / "odd_96001.wav", (np.random.default_rng(3).standard_normal(16000) * 0.2).astype(np.float32), 96001, subtype="PCM_16")
    hdr = b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", 0xFFFFFF00)
    (bad / "lying_size.wav").write_bytes(hdr + b"\x00\x00" * 100)
    hdr0 = b"RIFF" + struct.pack("<I", 36 + 200) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 0, 16000, 0, 0, 16) + b"data" + struct.pack("<I", 200)
    (bad / "zero_channels.wav").write_bytes(hdr0 + b"\x01" * 200)
    (bad / "binary.txt").write_bytes(b"\x00\x01\x02" * 3000)
    (bad / "png_named.txt").write_bytes(png[:100])
    (bad / "huge.txt").write_bytes(b"word " * 1_100_000)  # 5.5 MB: over the text limit
    with open(os.path.join(os.fsencode(bad), b"latin1_\xe9.txt"), "wb") as f:
        f.write(b"name not UTF-8")
    os.mkfifo(bad / "fifo.wav")
    os.symlink("/dev/zero", bad / "zero_link.wav")
    os.symlink("/dev/urandom", bad / "urandom.txt")
    os.symlink("/etc/passwd", bad / "passwd.md")
    os.symlink(bad / "nowhere.png", bad / "dangling.png")
    os.symlink(bad / "loop2.jpg", bad / "loop1.jpg"); os.symlink(bad / "loop1.jpg", bad / "loop2.jpg")
    silent = np.zeros(4000 * 1800, np.int16)  # 30 min of digital silence
    sf.write(bad / "silent_30min.wav", silent, 4000, subtype="PCM_16")
    return good, bad


def test_malformed_corpus_is_recorded_file_by_file_within_a_memory_bound(tmp_path):
    good, bad = build_corpus(tmp_path / "archive", FIXTURES)
    data = tmp_path / "data"
    peak_file = tmp_path / "peak_kb"
    # the indexer runs under a wrapper process whose only child it is: RUSAGE_CHILDREN of pytest itself is the
    # largest of every child any earlier test started (a full suite measured 2056 MB that way)
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[2:]); "
               "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
               "sys.exit(r.returncode)")
    proc = subprocess.run([sys.executable, "-c", wrapper, str(peak_file), sys.executable, "-m", "indexer", "add",
                           str(tmp_path / "archive"), "--data-dir", str(data), "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    peak_mb = int(peak_file.read_text()) / 1024
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    bad_names = {os.fsencode(n).decode("utf-8", "backslashreplace") for n in os.listdir(bad)}
    good_names = set(os.listdir(good))
    assert (out["added"], out["errors"]) == (len(good_names), len(bad_names)) == (12, 25), out

    errors = {Path(e["path"]).name: e["error"] for e in run_json("indexer", "errors", "--data-dir", str(data))["errors"]}
    assert set(errors) == bad_names
    for name, message in errors.items():
        assert name in message and WHAT_TO_DO.search(message), f"{name}: {message}"
        assert "Errno" not in message and "Traceback" not in message, message
    with sqlite3.connect(data / "catalog.sqlite3") as conn:
        indexed = {Path(p).name for (p,) in conn.execute("select distinct f.path from files f join items i on "
                                                         "i.file_id = f.id")}
        contents = " ".join(c or "" for (c,) in conn.execute("select content from items"))
    assert indexed == good_names
    assert "root:" not in contents  # /etc/passwd was linked as passwd.md
    assert peak_mb < PEAK_RSS_MB, f"peak RSS {peak_mb:.0f} MB"

    again = run_json("indexer", "add", str(tmp_path / "archive"), "--data-dir", str(data))
    assert (again["added"], again["errors"], again["known_errors"]) == (0, 0, 25), again

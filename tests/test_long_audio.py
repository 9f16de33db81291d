"""Long and odd recordings (issue 13, item 10): streamed in windows, silence skipped before Whisper,
no transcripts of non-speech, decode look-ahead bounded by bytes."""

from __future__ import annotations

import json
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from conftest import FIXTURES, REPO, run_json
from retrieval import decoders
from retrieval.encoders.speech_asr import has_speech


def test_windows_are_streamed_exactly_as_split_and_silence_is_skipped(tmp_path):
    rng = np.random.default_rng(0)
    for seconds in (12, 30, 55, 80, 80.01, 123.4):
        x = (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
        sf.write(tmp_path / "x.wav", x, 16000, subtype="FLOAT")
        whole = decoders.split_segments(decoders.load_audio(tmp_path / "x.wav"))
        streamed = list(decoders.stream_segments(tmp_path / "x.wav"))
        assert [(s.start, s.end) for s in streamed] == [(s.start, s.end) for s in whole], seconds
        assert all(np.array_equal(a.samples, b.samples) for a, b in zip(streamed, whole))
    x[16000 * 30:16000 * 90] = 0  # a silent minute in the middle: the windows inside it are skipped
    sf.write(tmp_path / "gap.wav", x, 16000, subtype="FLOAT")
    stats = decoders.StreamStats()
    starts = [s.start for s in decoders.stream_segments(tmp_path / "gap.wav", stats=stats)]
    assert starts == [0.0, 25.0, 75.0, 100.0] and (stats.windows, stats.silent) == (5, 1)


def test_voice_activity_decides_what_whisper_transcribes():
    speech, _ = sf.read(FIXTURES / "speech" / "dog_park.wav", dtype="float32")
    noise = (np.random.default_rng(1).standard_normal(16000 * 10) * 0.05).astype(np.float32)
    assert has_speech(speech)
    assert not has_speech(np.zeros(16000 * 30, np.float32)) and not has_speech(noise)


def test_two_hour_silent_recording_and_a_1_hz_one_are_rejected_before_transcription(tmp_path):
    """Rejected by level and rate while streaming (never decoded whole, never sent to Whisper): the errors name
    why, the noise clip has no hallucinated transcript, and memory stays bounded. How fast is bench/'s job."""
    root, data = tmp_path / "archive", tmp_path / "data"
    root.mkdir()
    sf.write(root / "silent_2h.wav", np.zeros(4000 * 7200, np.int16), 4000, subtype="PCM_16")  # 58 MB
    assert (root / "silent_2h.wav").stat().st_size > 57_000_000
    sf.write(root / "one_hz.wav", (np.random.default_rng(0).standard_normal(100) * 0.3).astype(np.float32), 1,
             subtype="PCM_16")
    noise = (np.random.default_rng(2).standard_normal(16000 * 8) * 0.05).astype(np.float32)
    sf.write(root / "noise.wav", noise, 16000)  # not silent, no speech: indexed by sound, no transcript
    (root / "note.txt").write_text("A note about quiet evenings.")
    proc = subprocess.run([sys.executable, "-m", "indexer", "add", str(root), "--data-dir", str(data), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["added"], out["errors"]) == (2, 2), out
    errors = {Path(e["path"]).name: e["error"] for e in run_json("indexer", "errors", "--data-dir", str(data))["errors"]}
    assert "silent (2.0 h under -60 dBFS)" in errors["silent_2h.wav"] and "recording level" in errors["silent_2h.wav"]
    assert "sample rate 1 Hz is outside" in errors["one_hz.wav"]
    with sqlite3.connect(data / "catalog.sqlite3") as conn:
        rows = conn.execute("select f.path, i.content from items i join files f on f.id = i.file_id "
                            "where i.modality = 'audio'").fetchall()
    assert [(Path(p).name, c or "") for p, c in rows] == [("noise.wav", "")]  # no hallucinated "You"
    assert peak_mb < 2500, f"peak RSS {peak_mb:.0f} MB"


def test_decode_look_ahead_is_bounded_by_bytes(tmp_path, tiny_openclip):
    root, data = tmp_path / "archive", tmp_path / "data"
    root.mkdir()
    for i in range(6):  # ~60 KB each on disk, 27 MB each decoded
        Image.new("RGB", (3000, 3000), (40 * i, 100, 200)).save(root / f"big_{i}.png")
    env = {"INDEXER_DECODE_BUDGET_MB": "30"}
    out = run_json("indexer", "add", str(root), "--data-dir", str(data), "--model", f"openclip:{tiny_openclip}",
                   "--batch-size", "32", "--workers", "2", env=env)
    assert out["added"] == 6
    assert out["timings"]["decode_held_peak_mb"] <= 30 + 27, out["timings"]

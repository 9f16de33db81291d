"""Real human speech for evaluation: transcribed clips from the pocketsphinx 5.1.1
source archive (BSD licence), fetched with ``pip download`` from PyPI.

Writes 16 kHz WAVs and ``eval_human.jsonl`` (audio rows + their transcripts as text
rows, label = clip id) for ``python -m retrieval eval``; the archive's deliberately
malformed WAVs are copied to ``malformed/`` as bad-input cases.
Run: ``python -m retrieval.training.human_speech --out tests/fixtures/human``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

SDIST = "pocketsphinx==5.1.1"
PREFIX = "pocketsphinx-5.1.1/test/data/"
RAW = {"goforward.raw": "go forward ten meters", "tidigits/dhd.2934z.raw": "two nine three four zero"}
MALFORMED = ("bad.wav", "null.wav", "evil.wav", "awful.wav")


def _transcriptions(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*<s>(.*)</s>\s*\((.+)\)\s*$", line)
        if m:
            out[m.group(2).strip()] = " ".join(m.group(1).split())
    return out


def build(out: Path, cache: Path) -> Path:
    import soundfile as sf

    cache.mkdir(parents=True, exist_ok=True)
    archives = list(cache.glob("pocketsphinx-5.1.1.tar.gz"))
    if not archives:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", SDIST,
                        "-d", str(cache)], check=True)
        archives = list(cache.glob("pocketsphinx-5.1.1.tar.gz"))
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "malformed").mkdir(exist_ok=True)
    rows = []
    with tarfile.open(archives[0]) as tar, tempfile.TemporaryDirectory() as tmp:
        members = [m for m in tar.getmembers() if m.name.startswith(PREFIX)]
        tar.extractall(tmp, members=members, filter="data")
        data = Path(tmp) / PREFIX
        clips: dict[str, tuple[Path, str]] = {}
        for folder in ("cards", "librivox"):
            trans = _transcriptions(next((data / folder).glob("*transcription")).read_text())
            for cid, text in trans.items():
                clips[f"{folder}-{cid}"] = (data / folder / f"{cid}.wav", text)
        for rel, text in RAW.items():
            clips[Path(rel).stem.replace(".", "-")] = (data / rel, text)
        for cid, (src, text) in sorted(clips.items()):
            if src.suffix == ".raw":
                audio = np.frombuffer(src.read_bytes(), dtype="<i2").astype(np.float32) / 32768
                sr = 16000
            else:
                audio, sr = sf.read(src, dtype="float32")
            sf.write(out / "clips" / f"{cid}.wav", audio, sr, subtype="PCM_16")
            rows.append({"id": f"{cid}-audio", "modality": "audio", "path": f"clips/{cid}.wav", "label": cid})
            rows.append({"id": f"{cid}-text", "modality": "text", "text": text, "label": cid})
        for name in MALFORMED:
            (out / "malformed" / name).write_bytes((data / name).read_bytes())
    with open(out / "eval_human.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    (out / "README.md").write_text(
        "# Real human speech (evaluation only)\n\n"
        "Transcribed clips from the test data of the pocketsphinx 5.1.1 source archive on PyPI "
        "(CMU Sphinx, BSD 2-clause licence; the librivox clips are public-domain LibriVox readings), "
        "converted to 16 kHz WAV. `malformed/` holds that archive's deliberately broken WAVs.\n\n"
        "Rebuild: `python -m retrieval.training.human_speech --out tests/fixtures/human`.\n"
        "Evaluate: `python -m retrieval eval --manifest tests/fixtures/human/eval_human.jsonl`.\n")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="tests/fixtures/human")
    p.add_argument("--cache", default="data/cache")
    a = p.parse_args()
    print(build(Path(a.out), Path(a.cache)))


if __name__ == "__main__":
    main()

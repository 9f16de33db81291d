"""Whisper's 30 s window in the ASR cascade: what a shorter encoder window buys and costs, side by side.

The cascade (``retrieval/encoders/speech_asr.py``) lets faster-whisper pad every clip's log-mel to Whisper's
30 s window; the CTranslate2 encoder accepts shorter inputs (the learned head already uses 6 s windows, trained
that way). This bench cuts the padded features to a shorter window just before the encoder (the same
``WhisperModel.transcribe`` otherwise: beam 5, word timestamps, no previous-text conditioning) and measures,
in one run on the same clips, each window's time per clip and its word error rate against the text that was
spoken. Whisper was trained on 30 s windows only, so a shorter one is a change of input distribution: the
question is whether it costs words.

Clips: the real human recordings in ``tests/fixtures/human`` (pocketsphinx test data), the 8 fixture clips, and
(when ``data/train`` exists, made by ``python -m retrieval build-data``) up to ``--synthetic`` clips of the held-out
voice and held-out concepts. No reserved evaluation set is used.

    .venv/bin/python bench/asr_window.py --out bench/results-asr-window.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WINDOWS = {"30s (default)": None, "20s": 2000, "15s": 1500, "10s": 1000}  # log-mel frames kept (100 per second)


def clips(data: Path, synthetic: int) -> list[tuple[str, str, str]]:
    """(group, wav path, spoken text)."""
    out = []
    human = REPO / "tests" / "fixtures" / "human"
    texts = {json.loads(l)["label"]: json.loads(l)["text"] for l in (human / "eval_human.jsonl").open()
             if json.loads(l)["modality"] == "text"}
    out += [("human", str(p), texts[p.stem]) for p in sorted((human / "clips").glob("*.wav")) if p.stem in texts]
    fixtures = REPO / "tests" / "fixtures" / "speech"
    captions = json.loads((fixtures / "captions.json").read_text())
    out += [("fixture", str(fixtures / name), v) for name, v in sorted(captions.items()) if (fixtures / name).is_file()]
    manifest = data / "clips.jsonl"
    if manifest.is_file() and synthetic:
        rows = [json.loads(l) for l in manifest.open()]
        for split in ("heldout-voice", "heldout-concept"):
            chosen = [r for r in rows if r["split"] == split]
            step = max(1, len(chosen) // (synthetic // 2))
            out += [(split, str(data / "speech" / r["path"]), r["text"]) for r in chosen[::step][: synthetic // 2]]
    return out


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9 ]", " ", (text or "").lower()).split()


def edits(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[:], i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return d[len(hyp)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "data" / "train")
    p.add_argument("--synthetic", type=int, default=80, help="held-out synthetic clips (half voice, half concepts)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    import faster_whisper.transcribe as fwt
    import soundfile as sf

    from retrieval.encoders.registry import DEFAULT_MODEL, _locate, model_config
    from retrieval.encoders.speech_asr import WhisperAsr

    keep: dict[str, int | None] = {"frames": None}
    encode = fwt.WhisperModel.encode

    def short_encode(self, features):  # noqa: ANN001 - faster-whisper's own signature
        return encode(self, features if keep["frames"] is None else features[..., : keep["frames"]])

    fwt.WhisperModel.encode = short_encode
    asr = WhisperAsr(_locate(model_config(DEFAULT_MODEL)["towers"]["audio"]))
    todo = clips(args.data, args.synthetic)
    audio = []
    for _, path, _ in todo:
        x, sr = sf.read(path, dtype="float32")
        if sr != 16000:
            raise SystemExit(f"{path}: {sr} Hz; these clips are 16 kHz")
        audio.append(x.mean(axis=1) if x.ndim > 1 else x)
    asr.transcribe(audio[0])  # load and warm up
    result: dict = {"benchmark": "asr_window: Whisper tiny.en encoder window in the ASR cascade (beam 5, word timestamps)",
                    "clips": {g: sum(1 for t in todo if t[0] == g) for g in dict.fromkeys(t[0] for t in todo)},
                    "mean_clip_s": round(float(np.mean([len(a) for a in audio])) / 16000, 2),
                    "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
                    "windows": {}}
    base: list[str] = []
    for name, frames in WINDOWS.items():
        keep["frames"] = frames
        t0 = time.perf_counter()
        hyps = [asr.transcribe(a)["transcript"] for a in audio]
        ms = (time.perf_counter() - t0) / len(audio) * 1000
        base = base or hyps
        row: dict = {"ms_per_clip": round(ms, 1), "clips_per_s": round(1000 / ms, 2),
                     "same_transcript_as_30s": sum(words(h) == words(b) for h, b in zip(hyps, base))}
        for group in result["clips"]:
            pairs = [(words(ref), words(h)) for (g, _, ref), h in zip(todo, hyps) if g == group]
            row[f"wer_{group}"] = round(sum(edits(r, h) for r, h in pairs) / max(1, sum(len(r) for r, _ in pairs)), 4)
        row["longest_transcript_words"] = max(len(words(h)) for h in hyps)  # a looping decoder shows here
        result["windows"][name] = row
        print(name, json.dumps(row), file=sys.stderr, flush=True)
    result["note"] = ("time per clip includes voice-activity detection, decoding and word alignment; "
                      "wer = word edits / reference words, lower-cased, punctuation dropped")
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

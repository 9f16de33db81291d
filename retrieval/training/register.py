"""Point a bundled model's registry config at freshly exported weights.

``register(name, export_dir)`` writes the image tower and the fused speech tower
(with every file's SHA-256) into ``retrieval/encoders/configs/<name>.json``; the
text tower entry and the ASR package entry are kept as they are.
``register_part(name, part, folder, files)`` records an extra part (the
re-ranker, the score calibration) the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..encoders.registry import CONFIG_DIR
from ..encoders.weights import sha256_file

RETRIEVAL_DIR = CONFIG_DIR.parent.parent


def _relative(folder: Path) -> Path:
    folder = Path(folder).resolve()
    try:
        return folder.relative_to(RETRIEVAL_DIR.resolve())
    except ValueError as exc:
        raise ValueError(f"{folder} is not inside {RETRIEVAL_DIR}; export the model under retrieval/models/") from exc


def register_part(name: str, part: str, folder: Path, files: tuple[str, ...]) -> Path:
    """Record ``part`` of model ``name`` (its folder and each file's SHA-256) in the registry config."""
    rel = _relative(folder)
    path = CONFIG_DIR / f"{name}.json"
    cfg = json.loads(path.read_text())
    cfg[part] = {"path": str(rel), "files": {f: sha256_file(Path(folder) / f) for f in files}}
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def register(name: str, export_dir: Path) -> Path:
    export_dir = Path(export_dir).resolve()
    rel = _relative(export_dir)
    path = CONFIG_DIR / f"{name}.json"
    cfg = json.loads(path.read_text())
    fusion = json.loads((export_dir / "speech_fusion.json").read_text())
    sha = {f: sha256_file(export_dir / f) for f in ("image_cnn.safetensors", "speech_head.safetensors", "arch.json", "speech_fusion.json")}
    towers = cfg["towers"]
    audio = dict(towers["audio"])
    audio.update({"type": "speech_fused", "dim": cfg["dim"], "mode": fusion["mode"],
                  "trained": {"path": str(rel), "files": {f: sha[f] for f in ("speech_head.safetensors", "arch.json", "speech_fusion.json")}}})
    towers["image"] = {"type": "cnn_image", "dim": cfg["dim"], "path": str(rel),
                       "files": {f: sha[f] for f in ("image_cnn.safetensors", "arch.json")}}
    towers["audio"] = audio
    cfg["towers"] = {k: towers[k] for k in ("text", "image", "audio")}
    cfg["description"] = ("Bundled offline default: locked all-MiniLM-L6-v2 text tower; a small CNN image tower trained "
                          "LiT-style against it on emoji and Iconify drawing sets (pictograms, not photographs); speech = "
                          "Whisper tiny.en encoder frames -> trained frame layer + attention pooling head (CTC-aided), "
                          f"gated with the ASR cascade (mode: {fusion['mode']}). See {rel}/MODEL_CARD.md.")
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path

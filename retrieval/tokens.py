"""Token features for re-ranking: the views of an item and the on-disk store.

An item has one or more *views*, each a small matrix of unit-length token
features in the joint space (pooled vector first): an image has its ``pixels``
(CNN patches) and, when its file name has words, a ``name`` (those words through
the text tower); an audio clip has its ``sound`` (pooled Whisper frames through
the speech head) and, when ASR heard words, its ``transcript``; a text item has
its ``text``. A query has one view per input.

The store keeps one small ``.npz`` per item (float16, at most ~33 tokens per
view), sharded into folders of 4096 ids, under ``<data dir>/tokens``; it is
written by the indexer beside the embeddings and rebuilt by ``indexer rebuild``.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .encoders import Model, ModelError

VIEW_TYPES = ("text", "pixels", "name", "sound", "transcript")
QUERY_VIEW = {"text": "text", "image": "pixels", "audio": "sound"}  # the view an input of each modality gives
SHARD = 4096
_WORD = re.compile(r"[A-Za-z]{2,}")
_HEXISH = re.compile(r"^[0-9a-fA-F]+$")

Views = dict[str, np.ndarray]


def name_words(path: str | Path) -> str:
    """Words of a file name ('red-apple_2.png' -> 'red apple'); '' for names like '1f34e.png' or 'IMG_0042'."""
    stem = Path(path).stem
    words = [w for w in _WORD.findall(stem.replace("_", " ")) if not _HEXISH.match(w) and w.lower() not in ("img", "dsc", "pxl")]
    return " ".join(words).lower()


def model_has_tokens(model: Model) -> bool:
    try:
        return all(model.tower(m).has_tokens() for m in model.modalities)
    except ModelError:
        return False


def item_views(model: Model, modality: str, payloads: Sequence[Any], contents: Sequence[str | None],
               paths: Sequence[str]) -> list[Views]:
    """Views of freshly encoded items: the modality's own tokens plus name/transcript views when they have words."""
    own = model.encode_tokens(modality, payloads)
    main = QUERY_VIEW[modality]
    views: list[Views] = [{main: t} for t in own]
    extra_name = {"image": "name", "audio": "transcript"}.get(modality)
    if extra_name:
        words = [name_words(p) if modality == "image" else (c or "").strip() for p, c in zip(paths, contents)]
        todo = [i for i, w in enumerate(words) if w]
        for i, t in zip(todo, model.encode_tokens("text", [words[i] for i in todo])):
            views[i][extra_name] = t
    return views


def query_views(model: Model, modality: str, payload: Any) -> Views:
    return {QUERY_VIEW[modality]: model.encode_tokens(modality, [payload])[0]}


class TokenStore:
    """One float16 ``.npz`` per item id under ``root``; a ``manifest.json`` names the model that wrote it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, item_id: int) -> Path:
        return self.root / f"{int(item_id) // SHARD:05d}" / f"{int(item_id)}.npz"

    def check_model(self, model: str, dim: int) -> None:
        """Create the manifest, or refuse a store written by another model."""
        manifest = self.root / "manifest.json"
        if manifest.is_file():
            info = json.loads(manifest.read_text())
            if info.get("model") != model or info.get("dim") != dim:
                raise ModelError(f"token store {self.root} was written by model '{info.get('model')}', not '{model}'; "
                                 f"delete it and run `python -m indexer rebuild --tokens`")
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"model": model, "dim": dim, "dtype": "float16", "views": list(VIEW_TYPES)}))
        tmp.replace(manifest)

    def put_many(self, items: Iterable[tuple[int, Views]]) -> None:
        for item_id, views in items:
            path = self._path(item_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez(tmp, **{k: np.asarray(v, np.float16) for k, v in views.items()})
            tmp.replace(path)

    def get_many(self, ids: Sequence[int]) -> dict[int, Views]:
        """Views of the ids that have them (missing or unreadable files are left out)."""
        out: dict[int, Views] = {}
        for item_id in ids:
            try:
                with np.load(self._path(item_id)) as z:
                    out[int(item_id)] = {k: z[k].astype(np.float32) for k in z.files}
            except (FileNotFoundError, OSError, ValueError, zipfile.BadZipFile):
                continue
        return out

    def delete_many(self, ids: Iterable[int]) -> None:
        for item_id in ids:
            self._path(item_id).unlink(missing_ok=True)

    def ids(self) -> set[int]:
        if not self.root.is_dir():
            return set()
        return {int(p.stem) for p in self.root.glob("*/*.npz") if p.stem.isdigit()}


def views_summary(views: Mapping[str, np.ndarray]) -> dict[str, int]:
    return {k: int(len(v)) for k, v in views.items()}

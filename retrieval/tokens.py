"""Token features for re-ranking: the views of an item and the on-disk store.

An item has one or more *views*, each a small matrix of unit-length token
features in the joint space (pooled vector first): an image has its ``pixels``
(CNN patches) and, when its file name has words, a ``name`` (those words through
the text tower); an audio clip has its ``sound`` (pooled Whisper frames through
the speech head) and, when ASR heard words, its ``transcript``; a text item has
its ``text``. A query has one view per input.

The store keeps one small ``.tok`` file per item (a JSON header, then int8 rows with a
scale each, :func:`encode_views`; at most ~33 tokens per view), sharded into folders of 4096 ids, under ``<data dir>/tokens``; it is
written by the indexer beside the embeddings and rebuilt by ``indexer rebuild``.

A full rebuild never deletes the store it replaces: :meth:`TokenStore.begin_rebuild` gives a new store
beside it (``tokens.new``), :meth:`TokenStore.commit_rebuild` marks it complete and swaps it in with two
renames. A process killed at any point leaves either the old store or the complete new one in place;
the next :class:`TokenStore` opened on the folder finishes or undoes the swap (:meth:`TokenStore.recover`).
"""

from __future__ import annotations

import json
import re
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


def model_has_tokens(model: Model, modality: str) -> bool:
    """Whether items of ``modality`` get token features: only for a model with a trained re-ranker (the
    only reader of tokens; without one they would cost indexing time and disk for nothing) whose tower for
    ``modality`` gives them (builds only that tower). ``indexer rebuild`` fills them in if a re-ranker
    is registered later."""
    from .encoders.registry import has_part

    if not has_part(model.name, "reranker"):
        return False
    try:
        return model.tower(modality).has_tokens()
    except ModelError:
        return False


def item_views(model: Model, modality: str, payloads: Sequence[Any], contents: Sequence[str | None],
               paths: Sequence[str], own: Sequence[np.ndarray] | None = None) -> list[Views]:
    """Views of freshly encoded items: the modality's own tokens (``own`` when the caller computed them with
    the vectors, :meth:`Tower.encode_with_tokens`) plus name/transcript views when they have words; the text
    tower is not touched (nor loaded) when none has words."""
    if own is None:
        own = model.encode_tokens(modality, payloads)
    main = QUERY_VIEW[modality]
    views: list[Views] = [{main: t} for t in own]
    extra_name = {"image": "name", "audio": "transcript"}.get(modality)
    if extra_name:
        words = [name_words(p) if modality == "image" else (c or "").strip() for p, c in zip(paths, contents)]
        todo = [i for i, w in enumerate(words) if w]
        for i, t in zip(todo, model.encode_tokens("text", [words[i] for i in todo]) if todo else []):
            views[i][extra_name] = t
    return views


def query_views(model: Model, modality: str, payload: Any) -> Views:
    return {QUERY_VIEW[modality]: model.encode_tokens(modality, [payload])[0]}


class TokenStore:
    """One ``.tok`` file per item id under ``root``; a ``manifest.json`` names the model that wrote it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.recover()

    # ---- full rebuilds: write beside, then swap ------------------------
    @property
    def _new(self) -> Path:
        return self.root.with_name(self.root.name + ".new")

    @property
    def _old(self) -> Path:
        return self.root.with_name(self.root.name + ".old")

    def recover(self) -> None:
        """Finish (or undo) a swap that a killed rebuild left half done. An incomplete ``<root>.new`` is left
        alone (a rebuild may be writing it); the next :meth:`begin_rebuild` clears it."""
        import shutil

        try:
            if not self.root.exists():
                if (self._new / "COMPLETE").is_file():
                    self._new.rename(self.root)  # killed between the two renames: the new store is whole
                elif self._old.exists():
                    self._old.rename(self.root)  # killed before the new store was complete: keep the old
            if self.root.exists() and self._old.exists():
                shutil.rmtree(self._old, ignore_errors=True)
            (self.root / "COMPLETE").unlink(missing_ok=True)
        except FileNotFoundError:  # another process finished the same swap first
            pass

    def discard_incomplete_rebuild(self) -> None:
        """Delete what a killed full rebuild left beside the store (call only while holding the writer lock)."""
        import shutil

        self.recover()
        if self.root.exists() and self._new.exists():
            shutil.rmtree(self._new, ignore_errors=True)

    def begin_rebuild(self) -> "TokenStore":
        """An empty store beside this one (``<root>.new``) for a full rebuild; this one stays in use meanwhile."""
        import shutil

        shutil.rmtree(self._new, ignore_errors=True)
        self._new.mkdir(parents=True)
        fresh = TokenStore.__new__(TokenStore)
        fresh.root = self._new
        return fresh

    def commit_rebuild(self, fresh: "TokenStore") -> None:
        """Swap a store from :meth:`begin_rebuild` in place of this one (two renames; see :meth:`recover`)."""
        import shutil

        (fresh.root / "COMPLETE").write_text("ok")
        if self.root.exists():
            shutil.rmtree(self._old, ignore_errors=True)
            self.root.rename(self._old)
        try:
            fresh.root.rename(self.root)
        except FileNotFoundError:
            if not self.root.exists():
                raise
        self.recover()

    def has_manifest(self) -> bool:
        """Whether any token features were ever written here (by a model that has them)."""
        return (self.root / "manifest.json").is_file()

    def copy_from(self, other: "TokenStore", ids: Iterable[int]) -> int:
        """Copy the token files of ``ids`` that ``other`` has (kept when an item's file no longer decodes)."""
        n = 0
        for item_id in ids:
            src = other._path(item_id)
            if src.is_file():
                dst = self._path(item_id)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(src.read_bytes())
                n += 1
        return n

    def _path(self, item_id: int) -> Path:
        return self.root / f"{int(item_id) // SHARD:05d}" / f"{int(item_id)}.tok"

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
        tmp.write_text(json.dumps({"model": model, "dim": dim, "dtype": TOKEN_DTYPE, "views": list(VIEW_TYPES)}))
        tmp.replace(manifest)

    def put_many(self, items: Iterable[tuple[int, Views]]) -> None:
        for item_id, views in items:
            path = self._path(item_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(encode_views(views))
            tmp.replace(path)

    def get_many(self, ids: Sequence[int]) -> dict[int, Views]:
        """Views of the ids that have them (missing or unreadable files are left out)."""
        out: dict[int, Views] = {}
        for item_id in ids:
            try:
                out[int(item_id)] = decode_views(self._path(item_id).read_bytes())
            except (FileNotFoundError, OSError, ValueError, KeyError):
                continue
        return out

    def delete_many(self, ids: Iterable[int]) -> None:
        for item_id in ids:
            self._path(item_id).unlink(missing_ok=True)

    def ids(self) -> set[int]:
        if not self.root.is_dir():
            return set()
        return {int(p.stem) for p in self.root.glob("*/*.tok") if p.stem.isdigit()}


TOKEN_DTYPE = "int8"  # what new token files hold; float16 files from earlier versions still read


def encode_views(views: Mapping[str, np.ndarray]) -> bytes:
    """One item's views as bytes: a 4-byte header length, a JSON header (names, rows, dim, dtype), then per
    row a float32 scale and the row as int8 (``round(x / scale)``, scale = max |x| / 127).

    Half the size of float16 rows (17 image tokens: 6.6 KB instead of 13 KB); token rows are unit vectors, so
    a dot product of two decoded rows moves by about 1e-3 (``tests/test_tokens_compact.py``)."""
    mats = {k: np.asarray(v, np.float32).reshape(len(v), -1) for k, v in views.items()}
    dim = next(iter(mats.values())).shape[1] if mats else 0
    rows = np.concatenate(list(mats.values())) if mats else np.zeros((0, 0), np.float32)
    scale = np.abs(rows).max(axis=1) / 127.0 if rows.size else np.zeros(0, np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    codes = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8) if rows.size else rows.astype(np.int8)
    header = json.dumps({"dim": dim, "dtype": TOKEN_DTYPE, "views": [[k, int(len(v))] for k, v in mats.items()]}).encode()
    return len(header).to_bytes(4, "little") + header + scale.tobytes() + codes.tobytes()


def decode_views(data: bytes) -> Views:
    n = int.from_bytes(data[:4], "little")
    header = json.loads(data[4:4 + n])
    dim, total = int(header["dim"]), sum(int(rows) for _, rows in header["views"])
    if header.get("dtype", "float16") == "int8":
        scale = np.frombuffer(data, np.float32, count=total, offset=4 + n)
        codes = np.frombuffer(data, np.int8, offset=4 + n + 4 * total)
        if len(codes) != total * dim:
            raise ValueError("token file size does not match its header")
        flat = (codes.reshape(total, dim).astype(np.float32) * scale[:, None]).reshape(-1)
    else:  # float16 rows, as written before int8
        flat = np.frombuffer(data, np.float16, offset=4 + n).astype(np.float32)
    out, pos = {}, 0
    for name, rows in header["views"]:
        out[name] = flat[pos:pos + rows * dim].reshape(rows, dim)
        pos += rows * dim
    if pos != len(flat):
        raise ValueError("token file size does not match its header")
    return out

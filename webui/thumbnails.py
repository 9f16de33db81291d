"""Server-side image thumbnails, cached on disk by content.

A thumbnail is keyed by the image file's SHA-256 (recorded by the indexer) and
its size, so a changed file gets a new one and identical files share one. Files
are written to a temporary name and renamed, so concurrent workers never serve
half a file. The cache lives in ``THUMBNAIL_DIR`` (default
``DATA_DIR/thumbnails``); when it cannot be written the thumbnail is still
served, just not kept.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path

from retrieval import decoders

log = logging.getLogger(__name__)

SIZES = (128, 256, 512)
FORMAT, MIME, SUFFIX = "WEBP", "image/webp", ".webp"


def render(source: Path, size: int) -> bytes:
    """A WebP of ``source`` fitting in ``size`` x ``size`` (never upscaled)."""
    from PIL import Image

    img = decoders.load_image(source, target=size)  # EXIF-rotated, RGB, bomb guard; JPEGs decoded at reduced scale
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, FORMAT, quality=82, method=4)
    return buf.getvalue()


class ThumbnailCache:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._warned = False

    def path_for(self, sha256: str, size: int) -> Path:
        return self.folder / sha256[:2] / f"{sha256}-{size}{SUFFIX}"

    def get(self, source: Path, sha256: str, size: int) -> bytes:
        if size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}")
        cached = self.path_for(sha256, size)
        try:
            return cached.read_bytes()
        except OSError:
            pass
        data = render(source, size)
        tmp = None
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".tmp-", suffix=SUFFIX)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, cached)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if not self._warned:
                log.warning("thumbnail cache %s is not writable (%s); serving thumbnails uncached", self.folder, exc)
                self._warned = True
        return data

"""What a model is for, and a notice when an archive holds what it was not trained on.

A model's registry config may name its ``domain`` (the bundled ``triad-mini`` says
``"pictograms"``: emoji and icons). Pictures that look photographic (no transparency,
large, many colours: :func:`looks_photographic`) are counted at indexing; where a
pictogram model indexed some, the indexer, the status page and the search result say
once that the model ranks photographs near chance and how to index them instead.
"""

from __future__ import annotations

from typing import Any

PHOTO_MIN_SIDE = 200  # pixels: pictograms are small
PHOTO_MIN_COLOURS = 2000  # distinct colours in a 64x64 reduction (flat drawings have a few hundred)
OPENCLIP_EXAMPLE = "openclip:ViT-B-32/laion2b_s34b_b79k"


def looks_photographic(img: Any) -> bool:
    """A PIL image as decoded (before compositing): opaque, large and many-coloured."""
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        if img.mode in ("RGBA", "LA", "PA") and img.getchannel("A").getextrema()[0] < 250:
            return False  # real transparency: a drawing or a cut-out
    if min(img.size) < PHOTO_MIN_SIDE:
        return False
    small = img.convert("RGB").resize((64, 64))
    return len(small.getcolors(64 * 64) or ()) >= PHOTO_MIN_COLOURS


def model_domain(model: str | None) -> str | None:
    """The registry's ``domain`` of a model (None for OpenCLIP and unknown names)."""
    from .encoders.registry import canonical_name, list_models, model_config

    try:
        name = canonical_name(model)
    except Exception:
        return None
    return model_config(name).get("domain") if name in list_models() else None


def photo_notice(model: str | None, photos: int) -> str | None:
    """The one-line notice for ``photos`` photographic pictures indexed with ``model``, or None."""
    if photos <= 0 or model_domain(model) != "pictograms":
        return None
    return (f"{photos} indexed picture(s) look like photographs, but the model '{model}' is trained on pictograms "
            f"(emoji and icons) and ranks photographs near chance. To search photographs, index them with an "
            f"OpenCLIP model into their own data directory: `python -m indexer add PATH --model {OPENCLIP_EXAMPLE} "
            f"--data-dir data/photos` (README, \"Models\").")

"""More drawing styles: Iconify JSON sets from npm (``@iconify-json/<set>``).

Each set's ``icons.json`` (SVG bodies + viewBox size, aliases) becomes SVG documents,
rendered to 128 px transparent RGBA PNGs (cairosvg; only ``build-data`` needs it).
Emoji sets map onto the emojibase concepts (``chars`` codepoints, else the icon name
against the CLDR label / Unicode name), so one concept drawn by several sets is one
positive group. Icons get ``icon:<name>`` concepts merged across sets by normalised
name (an icon whose name is an emoji's label joins that emoji's concept).

Never read here: OpenMoji and every Fluent set (reserved for held-out evaluation),
Apple's and Facebook's sets (licences); ``RESERVED`` excludes them by name.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

# Reserved for the project's held-out evaluation (OpenMoji, Fluent) or licence-excluded
# (Apple, Facebook): never downloaded, parsed or trained on.
RESERVED = re.compile(r"^(openmoji|fluent.*|apple.*|facebook.*|fb.*|noto-apple.*)$")
# Licences that allow training and redistributing derived weights (SPDX prefixes).
ALLOWED_LICENCES = ("MIT", "Apache-2.0", "CC-BY-3.0", "CC-BY-4.0", "CC0-1.0", "OFL-1.1", "ISC", "BSD-2-Clause",
                    "BSD-3-Clause")
EMOJI_SETS = {"emojione": "1.2.3", "emojione-monotone": "1.2.1", "noto-v1": "1.2.5", "streamline-emojis": "1.2.4",
              "fxemoji": "1.2.2", "emojione-v1": "1.2.3"}  # emojione-v1: CC-BY-SA-4.0, dropped by the licence filter
# twemoji is not used: the same artwork as the emoji-datasource-twitter PNGs already in training.
ICON_SETS = {"mdi": "1.2.3", "tabler": "1.2.41", "lucide": "1.2.137", "ph": "1.2.2", "game-icons": "1.2.4",
             "carbon": "1.2.29", "fa6-solid": "1.2.4", "icon-park-outline": "1.2.4", "healthicons": "1.2.13"}
# Whole sets kept out of training: our own unseen-style check (evaluation manifests only).
HELD_OUT_SETS = ("fxemoji", "icon-park-outline")
MAX_PER_SET = 2500  # icons rendered per icon set (all mapped emoji of an emoji set)
MAX_PER_CONCEPT_SET = 2  # style variants of one concept from one set
STYLE_SUFFIXES = ("outline", "outlined", "filled", "fill", "duotone", "sharp", "rounded", "round", "twotone",
                  "solid", "line", "light", "thin", "regular")
SET_SUFFIXES = {"ph": ("bold",)}  # Phosphor's "bold" is a weight, not part of the name
SIZE = 128


@dataclass
class IconSet:
    prefix: str
    info: dict
    icons: dict[str, dict]  # name -> {"body", "width", "height", "left", "top"}
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> parent (plain aliases only)
    chars: dict[str, str] = field(default_factory=dict)  # codepoint hex -> icon name
    categories: dict[str, list[str]] = field(default_factory=dict)

    @property
    def licence(self) -> str:
        return (self.info.get("license") or {}).get("spdx", "")

    @cached_property
    def codepoint_of(self) -> dict[str, str]:
        return {n: cp for cp, n in self.chars.items()}

    @property
    def emoji(self) -> bool:
        return self.prefix in EMOJI_SETS


def is_reserved(prefix: str) -> bool:
    return bool(RESERVED.match(prefix))


def licence_ok(spdx: str) -> bool:
    return spdx in ALLOWED_LICENCES


def fetch_sets(cache: Path, names: dict[str, str]) -> dict[str, Path]:
    """`npm pack @iconify-json/<set>@<version>` into ``cache`` once; returns {prefix: package dir}."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, version in names.items():
        if is_reserved(prefix):
            raise ValueError(f"{prefix} is reserved for held-out evaluation or licence-excluded")
        target = cache / f"iconify-json-{prefix}-{version}"
        if not (target / "package" / "icons.json").is_file():
            tgz = cache / f"iconify-json-{prefix}-{version}.tgz"
            if not tgz.is_file():
                subprocess.run(["npm", "pack", f"@iconify-json/{prefix}@{version}", "--silent"], cwd=cache, check=True,
                               stdout=subprocess.DEVNULL)
            target.mkdir(exist_ok=True)
            with tarfile.open(tgz) as tar:
                tar.extractall(target, filter="data")
        out[prefix] = target / "package"
    return out


def parse_set(root: Path) -> IconSet:
    """One Iconify package folder (``icons.json``, ``info.json``, optional ``chars.json``/``metadata.json``)."""
    data = json.loads((root / "icons.json").read_text())
    prefix = data["prefix"]
    if is_reserved(prefix):
        raise ValueError(f"{prefix} is reserved for held-out evaluation or licence-excluded")
    info = json.loads((root / "info.json").read_text()) if (root / "info.json").is_file() else data.get("info", {})
    w, h = data.get("width", 16), data.get("height", 16)
    icons = {}
    for name, icon in data["icons"].items():
        if icon.get("hidden"):
            continue
        icons[name] = {"body": icon["body"], "width": icon.get("width", w), "height": icon.get("height", h),
                       "left": icon.get("left", data.get("left", 0)), "top": icon.get("top", data.get("top", 0))}
    aliases = {a: v["parent"] for a, v in (data.get("aliases") or {}).items()
               if v.get("parent") in icons and set(v) == {"parent"}}
    chars = data.get("chars") or {}
    if not chars and (root / "chars.json").is_file():
        chars = json.loads((root / "chars.json").read_text())
    meta = json.loads((root / "metadata.json").read_text()) if (root / "metadata.json").is_file() else {}
    return IconSet(prefix, info, icons, aliases, chars, meta.get("categories") or data.get("categories") or {})


def svg_document(icon: dict, size: int = SIZE) -> str:
    """An icon as a standalone SVG, ``currentColor`` black, square canvas, aspect kept."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{size}" '
            f'height="{size}" viewBox="{icon["left"]} {icon["top"]} {icon["width"]} {icon["height"]}" color="#000" '
            f'preserveAspectRatio="xMidYMid meet">{icon["body"]}</svg>')


def render_png(icon: dict, dst: Path, size: int = SIZE) -> None:
    import cairosvg  # build-data only (requirements.txt)

    dst.parent.mkdir(parents=True, exist_ok=True)
    cairosvg.svg2png(bytestring=svg_document(icon, size).encode(), write_to=str(dst), output_width=size,
                     output_height=size)


def split_name(name: str, prefix: str = "") -> tuple[str, str]:
    """'arrow-left-bold' -> ('arrow left bold', ''); 'cat-outline' -> ('cat', 'outline'); digits dropped."""
    parts = [p for p in re.split(r"[-_:]+", name.lower()) if p]
    style = []
    suffixes = STYLE_SUFFIXES + SET_SUFFIXES.get(prefix, ())
    while len(parts) > 1 and (parts[-1] in suffixes or parts[-1].isdigit()):
        style.insert(0, parts.pop())
    return " ".join(parts), "-".join(style)


def compact(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def emoji_index(concepts: list[dict]) -> dict[str, str]:
    """Normalised label / Unicode name (spaced and compact forms) -> emoji concept key (``concepts.json`` rows)."""
    out: dict[str, str] = {}
    for c in concepts:
        for text in (c["label"], c["name"]):
            if text:
                t = re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()
                out.setdefault(t, c["key"])
                out.setdefault(compact(t), c["key"])
    return out


def match_emoji(s: IconSet, name: str, index: dict[str, str], keys: set[str]) -> str | None:
    """The emojibase concept an emoji-set icon draws: by codepoints first, then by name."""
    cp = s.codepoint_of.get(name)
    if cp:
        key = "-".join(p for p in cp.lower().split("-") if p != "fe0f")
        if key in keys:
            return key
    spaced = re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()
    return index.get(spaced) or index.get(compact(name))

"""Emoji concepts from the npm packages `emoji-datasource-{twitter,google}` and
`emojibase-data`: one concept per emoji, its images per vendor (skin-tone variants
as extra images of the same concept) and its captions.

OpenMoji and Fluent emoji are never read here: they are reserved for held-out
evaluation. Apple's and Facebook's sets are skipped (licences).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

VENDORS = ("twitter", "google")
NPM_PACKAGES = {
    "twitter": "emoji-datasource-twitter@16.0.0",
    "google": "emoji-datasource-google@16.0.0",
    "labels": "emojibase-data@17.0.0",
}
LICENCES = {
    "twitter": "Twemoji graphics (c) Twitter, Inc and other contributors, CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
    "google": "Noto Emoji (c) Google Inc., Apache License 2.0",
    "labels": "emojibase-data (c) Miles Johnson, MIT licence",
}


@dataclass
class Concept:
    key: str  # unified codepoints, lower case, FE0F removed
    label: str
    tags: list[str]
    name: str
    group: str
    images: dict[str, list[str]] = field(default_factory=dict)  # vendor -> [relative png paths]

    def captions(self) -> list[str]:
        return captions_for(self.label, self.tags, self.name)


def fetch_npm(cache: Path) -> dict[str, Path]:
    """`npm pack` each package into ``cache`` (once) and unpack it; returns {role: package dir}."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for role, spec in NPM_PACKAGES.items():
        name, version = spec.rsplit("@", 1)
        target = cache / f"{name}-{version}"
        if not (target / "package" / "package.json").is_file():
            tgz = cache / f"{name}-{version}.tgz"
            if not tgz.is_file():
                subprocess.run(["npm", "pack", spec, "--silent"], cwd=cache, check=True, stdout=subprocess.DEVNULL)
            target.mkdir(exist_ok=True)
            with tarfile.open(tgz) as tar:
                tar.extractall(target, filter="data")
        out[role] = target / "package"
    return out


def _key(hexcode: str) -> str:
    return "-".join(p for p in hexcode.lower().split("-") if p != "fe0f")


def load_concepts(packages: dict[str, Path]) -> list[Concept]:
    labels = {_key(e["hexcode"]): e for e in json.loads((packages["labels"] / "en" / "data.json").read_text())}
    groups = {g["order"]: g["message"] for g in json.loads((packages["labels"] / "en" / "messages.json").read_text())["groups"]}
    concepts: dict[str, Concept] = {}
    for vendor in VENDORS:
        root = packages[vendor]
        for e in json.loads((root / "emoji.json").read_text()):
            key = _key(e["unified"])
            base = labels.get(key)
            if base is None:
                continue
            c = concepts.get(key)
            if c is None:
                c = concepts[key] = Concept(
                    key=key, label=base["label"], tags=list(base.get("tags") or []),
                    name=(e.get("name") or "").lower(), group=groups.get(base.get("group"), ""),
                )
            paths = []
            if e.get(f"has_img_{vendor}"):
                paths.append(f"img/{vendor}/64/{e['image']}")
            for skin in (e.get("skin_variations") or {}).values():
                if skin.get(f"has_img_{vendor}"):
                    paths.append(f"img/{vendor}/64/{skin['image']}")
            paths = [p for p in paths if (root / p).is_file()]
            if paths:
                c.images[vendor] = paths
    return sorted((c for c in concepts.values() if c.images), key=lambda c: c.key)


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def label_text(label: str) -> str:
    """'flag: Germany' -> 'flag of Germany'; 'woman: red hair' -> 'woman with red hair'."""
    if label.startswith("flag: "):
        return "flag of " + label[6:]
    return label.replace(": ", " with ", 1) if ": " in label else label


def captions_for(label: str, tags: list[str], name: str) -> list[str]:
    """Label, tags and natural phrasings of one concept (deduplicated, order kept)."""
    lab = label_text(label)
    caps = [lab, _article(lab), f"an emoji of {_article(lab)}", f"a picture of {_article(lab)}", f"{lab} icon"]
    extra = [t for t in tags if t.lower() not in lab.lower()][:4]
    if extra:
        caps.append(f"{_article(lab)}, {_article(extra[0])}")
        caps.append(", ".join([lab, *extra[:3]]))
        caps.append(f"{lab} ({', '.join(extra)})")
    if name and name != lab.lower() and not re.search(r"\b(type|sign|symbol) \d", name):
        caps.append(name)
    seen, out = set(), []
    for c in caps:
        if c.lower() not in seen:
            seen.add(c.lower())
            out.append(c)
    return out


def spoken_captions(label: str, tags: list[str]) -> list[str]:
    """What people would say for a concept: the label and a few phrasings."""
    lab = label_text(label)
    out = [lab, _article(lab), f"show me {_article(lab)}", f"a picture of {_article(lab)}"]
    if tags:
        out.append(f"{_article(lab)}, {tags[0]}")
    return out


def split_concepts(concepts: list[Concept], held_out: float, seed: int) -> tuple[set[str], set[str]]:
    """Random concept split (fixed seed): (train keys, held-out keys)."""
    keys = [c.key for c in concepts]
    rng = random.Random(seed)
    rng.shuffle(keys)
    n = round(len(keys) * held_out)
    return set(keys[n:]), set(keys[:n])

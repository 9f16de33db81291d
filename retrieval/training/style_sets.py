"""Add the Iconify drawing styles to the emoji concepts (a ``build-data`` step).

Training sets go into each concept's ``images`` (the trainer treats every set as a
"vendor": two sets drawing one concept are a cross-style positive pair). Whole
held-out sets (``HELD_OUT_SETS``) go into ``heldout_styles`` only, which the trainer
never reads, and into ``eval_style_sets.jsonl``. Icon concepts (``icon:<name>``) are
split like emoji concepts, so held-out concepts stay out of every set.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .emoji_data import _article, spoken_captions
from .iconify_data import (EMOJI_SETS, HELD_OUT_SETS, ICON_SETS, MAX_PER_CONCEPT_SET, MAX_PER_SET, IconSet,
                           emoji_index, fetch_sets, is_reserved, licence_ok, match_emoji, parse_set, render_png,
                           split_name)

log = logging.getLogger(__name__)
EVAL_STYLE_CONCEPTS = 400  # seen concepts per held-out set in eval_style_sets.jsonl


def icon_captions(label: str, tags: list[str]) -> list[str]:
    caps = [label, _article(label), f"an icon of {_article(label)}", f"a picture of {_article(label)}",
            f"{label} icon", f"a drawing of {_article(label)}"]
    if tags:
        caps.append(f"{label} ({', '.join(tags[:3])})")
    return list(dict.fromkeys(caps))


def _pick(names: list[str], s: IconSet) -> list[str]:
    """Up to ``MAX_PER_CONCEPT_SET`` variants of one concept, the plain name first."""
    return sorted(names, key=lambda n: (split_name(n, s.prefix)[1] != "", len(n), n))[:MAX_PER_CONCEPT_SET]


def assign(rows: list[dict], sets: list[IconSet], held_out: float, seed: int) -> tuple[list[dict], list[tuple]]:
    """Map every set's icons onto concepts; returns (all concept rows, render jobs (prefix, name, concept key))."""
    keys = {r["key"] for r in rows}
    index = emoji_index([r for r in rows if not r["label"].startswith("flag")])
    single = {k: v for k, v in index.items() if "-" not in v and (" " in k or k.isalpha())}  # names icons may join
    per_set: dict[str, dict[str, list[str]]] = {}  # prefix -> concept key -> icon names
    icon_tags: dict[str, list[str]] = defaultdict(list)
    for s in sets:
        groups: dict[str, list[str]] = defaultdict(list)
        cat_of = {n: cat for cat, names in s.categories.items() for n in names}
        for name in sorted(s.icons):
            if s.emoji:
                key = match_emoji(s, name, index, keys)
            else:
                caption, _ = split_name(name, s.prefix)
                if not re.search(r"[a-z]", caption):
                    continue
                key = single.get(caption) or "icon:" + caption.replace(" ", "-")
                if key.startswith("icon:") and name in cat_of and cat_of[name] not in icon_tags[key]:
                    icon_tags[key].append(cat_of[name].lower())
            if key:
                groups[key].append(name)
        per_set[s.prefix] = groups
    train_sets = [s for s in sets if s.prefix not in HELD_OUT_SETS]
    popularity = defaultdict(int)  # how many training sets draw a concept: shared concepts are kept first
    for s in train_sets:
        for key in per_set[s.prefix]:
            popularity[key] += 1
    by_key = {r["key"]: r for r in rows}
    icon_keys = sorted(k for k in popularity if k.startswith("icon:"))
    rng = random.Random(seed + 11)
    shuffled = icon_keys[:]
    rng.shuffle(shuffled)
    held_icons = set(shuffled[:round(len(shuffled) * held_out)])
    jobs: list[tuple[str, str, str]] = []
    for s in sets:
        held_set = s.prefix in HELD_OUT_SETS
        groups = per_set[s.prefix]
        order = sorted(groups, key=lambda k: (-popularity.get(k, 0), k))
        if held_set:  # only concepts some training set also draws (cross-style eval)
            order = [k for k in order if popularity.get(k, 0) > 0 or (k in by_key and by_key[k]["images"])]
        count = 0
        for key in order:
            if not s.emoji and count >= MAX_PER_SET:
                break
            if key not in by_key:
                label = key[5:].replace("-", " ")
                tags = icon_tags.get(key, [])[:4]
                by_key[key] = {"key": key, "label": label, "tags": tags, "name": "", "group": "icon",
                               "split": "heldout" if key in held_icons else "train",
                               "captions": icon_captions(label, tags), "spoken": spoken_captions(label, tags),
                               "images": {}}
            field = "heldout_styles" if held_set else "images"
            paths = by_key[key].setdefault(field, {}).setdefault(s.prefix, [])
            for name in _pick(groups[key], s):
                paths.append(f"images/{s.prefix}/{name}.png")
                jobs.append((s.prefix, name, key))
                count += 1
    out = [r for r in by_key.values() if r["images"]]  # concepts only a held-out set draws are dropped
    return sorted(out, key=lambda r: r["key"]), jobs


def _render(job: tuple[dict, str]) -> bool:
    icon, dst = job
    try:
        render_png(icon, Path(dst))
        return True
    except Exception as e:  # noqa: BLE001 - a broken icon is skipped, the build goes on
        log.warning("render %s: %s", dst, e)
        return False


def load_sets(cache: Path, styles: str) -> tuple[list[IconSet], list[dict]]:
    """Fetch and parse the sets; returns (usable sets, licence table rows incl. rejected sets)."""
    names = dict(EMOJI_SETS) | (dict(ICON_SETS) if styles == "all" else {})
    names = {k: v for k, v in names.items() if not is_reserved(k)}
    sets, table = [], []
    for prefix, root in fetch_sets(cache, names).items():
        s = parse_set(root)
        ok = licence_ok(s.licence)
        role = "rejected (licence)" if not ok else "held out (eval only)" if prefix in HELD_OUT_SETS else "train"
        author = s.info.get("author") or {}
        table.append({"set": prefix, "name": s.info.get("name", prefix), "version": s.info.get("version", ""),
                      "npm": f"@iconify-json/{prefix}@{names[prefix]}", "licence": s.licence,
                      "licence_url": (s.info.get("license") or {}).get("url", ""), "author": author.get("name", ""),
                      "url": author.get("url", ""), "role": role})
        if ok:
            sets.append(s)
    return sets, table


def add_styles(rows: list[dict], out: Path, cache: Path, held_out: float, seed: int, styles: str = "all",
               workers: int = 2) -> list[dict]:
    """Render the sets into ``out/images/<set>/`` and return the extended concept rows."""
    sets, table = load_sets(cache, styles)
    rows, jobs = assign(rows, sets, held_out, seed)
    by_prefix = {s.prefix: s for s in sets}
    todo = [(by_prefix[p].icons[n], str(out / "images" / p / f"{n}.png")) for p, n, _ in jobs
            if not (out / "images" / p / f"{n}.png").is_file()]
    with ProcessPoolExecutor(workers) as pool:
        failed = sum(not ok for ok in pool.map(_render, todo, chunksize=64))
    if failed:  # drop paths that did not render
        for r in rows:
            for field in ("images", "heldout_styles"):
                for p, paths in list(r.get(field, {}).items()):
                    r[field][p] = [x for x in paths if (out / x).is_file()]
                    if not r[field][p]:
                        del r[field][p]
        rows = [r for r in rows if r["images"]]
    stats = defaultdict(lambda: [0, 0])
    for r in rows:
        for field in ("images", "heldout_styles"):
            for p, paths in r.get(field, {}).items():
                stats[p][0] += len(paths)
                stats[p][1] += 1
    for t in table:
        t["images"], t["concepts"] = stats.get(t["set"], [0, 0])
    (out / "style_sets.json").write_text(json.dumps(table, indent=1))
    log.info("%d icons rendered (%d failed); %d concepts", len(todo), failed, len(rows))
    return rows


def write_style_manifests(out: Path, rows: list[dict], seed: int = 0) -> list[Path]:
    """Per held-out set ``eval_style_<set>.jsonl``: text and other-style pictures (queries) -> the held-out
    set's pictures (gallery), seen concepts only (the style is what is unseen)."""
    rng = random.Random(seed + 5)
    written = []
    for prefix in HELD_OUT_SETS:
        path = out / f"eval_style_{prefix}.jsonl"
        written.append(path)
        with open(path, "w") as f:
            cands = [r for r in rows if r["split"] == "train" and prefix in r.get("heldout_styles", {})]
            for r in sorted(rng.sample(cands, min(EVAL_STYLE_CONCEPTS, len(cands))), key=lambda r: r["key"]):
                lab = r["key"]
                f.write(json.dumps({"id": f"{r['key']}-{prefix}", "modality": "image", "role": "gallery",
                                    "path": r["heldout_styles"][prefix][0], "label": lab}) + "\n")
                f.write(json.dumps({"id": f"{r['key']}-{prefix}-text", "modality": "text", "role": "query",
                                    "text": r["captions"][0], "label": lab}) + "\n")
                for vendor in sorted(r["images"])[:2]:
                    f.write(json.dumps({"id": f"{r['key']}-{prefix}-{vendor}", "modality": "image", "role": "query",
                                        "path": r["images"][vendor][0], "label": lab}) + "\n")
    return written

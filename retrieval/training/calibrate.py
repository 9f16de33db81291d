"""`python -m retrieval train --stage calibrate`: fit the score calibration of a bundled model.

Runs ``retrieval eval``'s path (real indexer, the query API) on the held-out
concepts of a built dataset (``eval_heldout.jsonl``: pictures, label texts and
clips in the held-out voice, none of them seen in training), plus typed query ->
note pairs from the machine's manual pages (:func:`note_rows`), once without and
once with re-ranking, and fits :func:`retrieval.calibration.fit` on every
(query, gallery item) pair's similarity (the whole gallery is ranked, so the
non-relevant pairs are all of them, not only the hardest: taking only a query's
top 100 made relevant pairs look worse than non-relevant ones for weak pairs,
speech -> image fitted a negative slope).
Writes ``calibration.json`` into the model folder and records its SHA-256 in
the registry config.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

from ..calibration import FILE, Calibration, fit, pair_key
from ..query import Hit
from ..rerank import RerankOptions
from .register import register_part


MAN_DIR = Path("/usr/share/man/man1")
NOTE_PAIRS = 600  # typed query -> note pairs from manual pages
NOTE_WORDS = 120  # a note is the first NOTE_WORDS words of a page's DESCRIPTION
_ESCAPE = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\\(..|\\\[[^\]]*\]|\\[&|^%]|\\\*\(..|\\\*.")


def _man_sections(path: Path) -> dict[str, str]:
    """NAME and DESCRIPTION of a roff manual page as plain text (macros and font escapes dropped)."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in gzip.open(path, "rt", encoding="utf-8", errors="replace"):
        if line.startswith((".SH", ".Sh")):
            current = line[3:].strip().strip('"').upper()
            sections.setdefault(current, [])
        elif current and not line.startswith((".", "'")):
            text = _ESCAPE.sub("", line).replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ").strip()
            if text:
                sections[current].append(text)
    return {k: " ".join(v) for k, v in sections.items()}


def note_rows(man_dir: Path = MAN_DIR, limit: int = NOTE_PAIRS) -> list[dict]:
    """Typed query -> note pairs from the machine's manual pages: each page's one-line summary (the NAME line
    after the dash: "retrieves files from the web") is a query whose one relevant note is the start of the
    page's DESCRIPTION. Short typed words against paragraphs, as a user searches notes; the emoji data have
    only labels (near-identical texts), which made every paragraph look irrelevant."""
    pages = sorted(p for p in man_dir.glob("*.1.gz") if p.is_file() and not p.is_symlink())
    rows, seen, per_family = [], set(), {}
    for path in pages:
        family = re.split(r"[-_.]", path.name)[0].lower()  # gcloud_alpha_..., git-..: one family, a few pages
        if per_family.get(family, 0) >= 2:
            continue
        try:
            sec = _man_sections(path)
        except (OSError, EOFError, UnicodeError):
            continue
        name, _, summary = sec.get("NAME", "").partition(" - ")
        words = sec.get("DESCRIPTION", "").split()
        summary = summary.strip()
        if not name or len(summary.split()) < 3 or len(words) < 40 or summary.lower() in seen:
            continue
        seen.add(summary.lower())
        per_family[family] = per_family.get(family, 0) + 1
        key = f"man-{path.name.removesuffix('.1.gz')}"
        rows.append((key, summary, " ".join(words[:NOTE_WORDS])))
    step = max(1, len(rows) // limit)
    out = []
    for key, summary, note in rows[::step][:limit]:
        out.append({"id": f"{key}-q", "modality": "text", "text": summary, "label": key, "role": "query"})
        out.append({"id": f"{key}-note", "modality": "text", "text": note, "label": key, "role": "gallery"})
    return out


def calibration_manifest(data: Path, man_dir: Path = MAN_DIR) -> Path:
    """``calibrate.jsonl`` in ``data``: the held-out manifest plus typed query -> note pairs (:func:`note_rows`)."""
    rows = [json.loads(line) for line in (data / "eval_heldout.jsonl").read_text().splitlines() if line.strip()]
    notes = note_rows(man_dir)
    if len(notes) < 2 * 100:
        raise FileNotFoundError(f"found only {len(notes) // 2} manual pages with a summary and a description in "
                                f"{man_dir}; typed -> note calibration needs them (apt-get install man-db manpages)")
    out = data / "calibrate.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows + notes))
    return out


def calibrate(data: Path, model: str, export: Path, register: str | None = None) -> dict[str, Any]:
    from ..cli.eval_cmd import evaluate

    manifest = calibration_manifest(Path(data))
    samples: dict[str, tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))

    def collect(qrow: dict, g_mod: str, order: list[tuple[dict, Hit]], rerank: bool) -> None:
        for rank, (row, hit) in enumerate(order):
            relevant = row["label"] == qrow["label"]
            if rerank and hit.stage != "rerank":
                continue  # the first-stage pass gives those
            x, y = samples[pair_key(qrow["modality"], g_mod, hit.stage)]
            x.append(hit.similarity)
            y.append(int(relevant))

    results = {}
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        for rerank in (False, True):
            options = RerankOptions() if rerank else None
            results["rerank" if rerank else "first"] = evaluate(
                manifest, model, Path(tmp), options, lambda q, g, o, r=rerank: collect(q, g, o, r))
    import numpy as np

    np.savez_compressed(Path(data) / "calibration_samples.npz",  # the fitted pairs, to inspect or refit
                        **{f"{k}|x": np.asarray(v[0], np.float32) for k, v in samples.items()},
                        **{f"{k}|y": np.asarray(v[1], np.int8) for k, v in samples.items()})
    cal: Calibration = fit(dict(samples), {"fitted_on": str(manifest.name), "model": model,
                                          "date": date.today().isoformat()})
    export = Path(export)
    export.mkdir(parents=True, exist_ok=True)
    cal.save(export / FILE)
    summary: dict[str, Any] = {"pairs": cal.pairs, "samples": cal.info["pairs"], "eval": results}
    if register:
        summary["registered"] = str(register_part(register, "calibration", export, (FILE,)))
    return summary

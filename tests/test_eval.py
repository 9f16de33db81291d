"""`python -m retrieval eval`: the DESIGN.md manifest format and JSON output, end to end."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import FIXTURES, run_cli, run_json


def test_eval_reports_every_modality_pair(tmp_path):
    captions = json.loads((FIXTURES / "speech" / "captions.json").read_text())
    rows = []
    for name, sentence in captions.items():
        label = Path(name).stem
        rows.append({"id": f"a-{label}", "modality": "audio", "path": str((FIXTURES / "speech" / name).resolve()), "label": label})
        rows.append({"id": f"t-{label}", "modality": "text", "text": sentence, "label": label})
    rows.append({"id": "t-extra", "modality": "text", "text": "a puppy chasing a ball on the grass", "label": "dog_park",
                 "role": "query"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    out = run_json("retrieval", "eval", "--manifest", str(manifest), "--no-rerank")
    # audio->audio and text->text have no relevant gallery row except the extra query: skipped or tiny
    assert "audio->audio" not in out
    assert out["text->text"]["n"] == 1
    for pair in ("text->audio", "audio->text"):
        m = out[pair]
        assert set(m) == {"R@1", "R@5", "R@10", "mAP", "n"}
        assert 0.0 <= m["mAP"] <= 1.0 and m["R@1"] <= m["R@5"] <= m["R@10"]
    assert out["text->audio"]["n"] == len(captions) + 1
    assert out["audio->text"]["n"] == len(captions)
    assert out["text->audio"]["R@1"] >= 0.85
    assert out["audio->text"]["R@1"] >= 0.85


def test_eval_rejects_bad_manifest(tmp_path):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"id": "x", "modality": "smell", "path": "a.bin", "label": "y"}\n')
    proc = run_cli("retrieval", "eval", "--manifest", str(manifest), check=False)
    assert proc.returncode == 2 and "bad.jsonl:1" in proc.stderr and "modality" in proc.stderr

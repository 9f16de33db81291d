"""One forward pass for vectors and re-ranking tokens (issue 14 part 6): ``Tower.encode_with_tokens`` gives what
``encode_with_notes`` + ``encode_tokens`` give, for every bundled tower, and indexing stores the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval import decoders
from retrieval.encoders import ModelError, create_model

FIXTURES = Path(__file__).parent / "fixtures"
ATOL = 2e-5  # float32 sums in another order (texts are batched by length in both paths, padding may differ)


@pytest.fixture(scope="module")
def model():
    return create_model(None)


def _payloads(modality: str) -> list:
    if modality == "text":  # lengths vary, so batches pad differently; one longer than MAX_TOKEN_FEATURES
        return ["a cat", "The lighthouse keeper walked along the cliffs at dawn, counting gulls " * 3,
                "banana", "", "rain over the harbour"] * 15  # 75 > batch_size 64: two batches
    if modality == "image":
        return [decoders.load_image(p) for p in sorted((FIXTURES / "heldout_style").glob("*.png"))[:12]]
    return [decoders.load_audio(p) for p in sorted((FIXTURES / "speech").glob("*.wav"))[:3]]


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_one_pass_equals_encode_plus_encode_tokens(model, modality):
    tower = model.tower(modality)
    batch = _payloads(modality)
    assert batch
    separate = tower.encode_with_notes(batch)
    separate_tokens = tower.encode_tokens(batch)
    together, tokens = model.encode_with_tokens(modality, batch)
    np.testing.assert_allclose(together.vectors, separate.vectors, atol=ATOL)
    assert together.notes == separate.notes  # audio: the cascade's transcripts
    assert len(tokens) == len(separate_tokens) == len(batch)
    for a, b in zip(tokens, separate_tokens):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=ATOL)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_a_tower_without_tokens_says_so(tiny_openclip):
    model = create_model(f"openclip:{tiny_openclip}")
    tower = model.tower("text")
    assert not tower.has_tokens()
    with pytest.raises(ModelError, match="no token features"):
        tower.encode_with_tokens(["a cat"])
    assert tower.encode_with_tokens([])[1] == []


_NAME_PROBE = r"""
import json, sys
from pathlib import Path
from indexer.pipeline import _encode
from indexer.writer import Unit
from retrieval import decoders
from retrieval.encoders import create_model

model = create_model("triad-mini-v1")  # has a re-ranker; a fresh process: no tower is built yet
images = [decoders.load_image(p) for p in sorted(Path(sys.argv[1]).glob("*.png"))[:4]]
units = [Unit("image", img, source=f"/archive/1f3{i:02x}.png") for i, img in enumerate(images)]
_encode(model, "image", units)
out = {"text_built_for_code_point_names": "text" in model._towers, "views": sorted(units[0].views)}
named = [Unit("image", images[0], source="/archive/red-apple.png")]
_encode(model, "image", named)
out.update(text_built_for_words="text" in model._towers, named_views=sorted(named[0].views))
print(json.dumps(out))
"""


def test_an_image_run_without_name_words_never_loads_the_text_tower():
    """Image files named by code point ('1f34e.png') have no name view: the text tower stays unbuilt (it cost an
    image run the text tower's load, ~1-3 s, for nothing)."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", _NAME_PROBE, str(FIXTURES / "heldout_style")], cwd=repo,
                          capture_output=True, text=True, check=True, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin",
                                                                           "OMP_NUM_THREADS": "1"})
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"text_built_for_code_point_names": False, "views": ["pixels"],
                   "text_built_for_words": True, "named_views": ["name", "pixels"]}


def test_a_model_without_a_reranker_stores_no_tokens(tmp_path):
    """Tokens are read only by a re-ranker: a model without one (triad-mini-2) indexes vectors only, the same
    vectors as with tokens; a model with one (triad-mini-v1) stores them."""
    from indexer.pipeline import _encode
    from indexer.writer import Unit
    from retrieval.tokens import model_has_tokens

    images = [decoders.load_image(p) for p in sorted((FIXTURES / "heldout_style").glob("*.png"))[:4]]
    plain = create_model("triad-mini-2")
    assert plain.tower("image").has_tokens() and not model_has_tokens(plain, "image")
    units = [Unit("image", img, source=f"/archive/red-apple-{i}.png") for i, img in enumerate(images)]
    _encode(plain, "image", units)
    assert all(u.views is None for u in units) and all(u.vector is not None for u in units)
    together, _ = plain.encode_with_tokens("image", images)
    np.testing.assert_allclose(np.stack([u.vector for u in units]), together.vectors, atol=ATOL)

    ranked = create_model("triad-mini-v1")
    assert model_has_tokens(ranked, "image")
    units = [Unit("image", img, source=f"/archive/red-apple-{i}.png") for i, img in enumerate(images)]
    _encode(ranked, "image", units)
    assert all(u.views and "pixels" in u.views for u in units)

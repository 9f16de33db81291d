"""Token files hold int8 rows with a scale each: half the size of float16, the re-ranker's output unchanged
within a small bound, and files written as float16 by earlier versions still read."""

from __future__ import annotations

import json

import numpy as np

from conftest import REPO
from retrieval.tokens import decode_views, encode_views


def _unit(rng: np.random.Generator, n: int, dim: int = 384) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _float16_bytes(views: dict[str, np.ndarray]) -> bytes:
    """A token file as versions before int8 wrote it (no dtype in the header, float16 rows)."""
    mats = {k: np.ascontiguousarray(v, np.float16) for k, v in views.items()}
    header = json.dumps({"dim": 384, "views": [[k, len(v)] for k, v in mats.items()]}).encode()
    return len(header).to_bytes(4, "little") + header + b"".join(v.tobytes() for v in mats.values())


def test_int8_round_trip_keeps_names_shapes_and_dot_products():
    rng = np.random.default_rng(0)
    views = {"pixels": _unit(rng, 17), "name": _unit(rng, 3)}
    back = decode_views(encode_views(views))
    assert list(back) == ["pixels", "name"] and back["pixels"].shape == (17, 384) and back["name"].shape == (3, 384)
    query = _unit(rng, 5)
    for name in views:
        exact, approx = query @ views[name].T, query @ back[name].T
        assert np.abs(exact - approx).max() < 3e-3, name
        assert np.allclose(np.linalg.norm(back[name], axis=1), 1.0, atol=3e-3)
    zero = decode_views(encode_views({"text": np.zeros((2, 384), np.float32)}))["text"]
    assert zero.shape == (2, 384) and not zero.any()  # an all-zero row: scale 1, no division by zero
    assert decode_views(encode_views({})) == {}


def test_int8_files_are_about_half_the_float16_size():
    views = {"pixels": _unit(np.random.default_rng(1), 17)}
    assert len(encode_views(views)) <= 0.55 * len(_float16_bytes(views))


def test_float16_files_of_earlier_versions_still_read():
    views = {"sound": _unit(np.random.default_rng(2), 9), "transcript": _unit(np.random.default_rng(3), 4)}
    back = decode_views(_float16_bytes(views))
    for name, mat in views.items():
        assert np.array_equal(back[name], mat.astype(np.float16).astype(np.float32))


def test_corrupt_token_files_are_refused():
    data = encode_views({"text": _unit(np.random.default_rng(4), 4)})
    try:
        decode_views(data[:-10])
    except ValueError as exc:
        assert "does not match its header" in str(exc)
    else:
        raise AssertionError("a truncated token file decoded")


def test_committed_reranker_scores_move_little_with_int8_tokens():
    """Real token features of the demo pictures and a typed query, through the committed re-ranker, stored as
    float16 (before) and as int8 (now): its corrections agree within 0.002 and rank the pictures the same."""
    from retrieval import decoders
    from retrieval.encoders import create_model
    from retrieval.rerank import create_reranker
    from retrieval.tokens import item_views, query_views

    model, reranker = create_model("triad-mini"), create_reranker("triad-mini")
    paths = sorted((REPO / "demo" / "images").glob("*.png"))[:12]
    views = item_views(model, "image", [decoders.load_image(p) for p in paths], [None] * len(paths),
                       [str(p) for p in paths])
    query = [("text", query_views(model, "text", "a red fruit"), 1.0)]
    as_f16 = reranker.scores(query, [decode_views(_float16_bytes(v)) for v in views], "image")
    as_i8 = reranker.scores(query, [decode_views(encode_views(v)) for v in views], "image")
    assert np.abs(as_f16 - as_i8).max() < 0.002  # measured 2.4e-4 (spread of the corrections: 0.1-0.5)
    assert list(np.argsort(-as_f16)[:5]) == list(np.argsort(-as_i8)[:5])

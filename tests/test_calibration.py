"""Score calibration: the fit recovers a known relevance curve; relevances keep each pair's order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval.calibration import Calibration, fit, fit_logistic, pair_key


def test_fit_recovers_a_known_logistic_and_is_class_balanced():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 1.0, 200_000)
    a, b = 10.0, -4.0
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-(a * x + b)))).astype(int)
    # balanced weights: refitting on a subsample of the negatives gives the same curve
    keep = (y == 1) | (rng.random(len(x)) < 0.3)
    fa, fb = fit_logistic(x, y)
    sa, sb = fit_logistic(x[keep], y[keep])
    assert fa == pytest.approx(sa, rel=0.05) and fb == pytest.approx(sb, abs=0.15)
    assert fa == pytest.approx(a, rel=0.1)  # the slope is the curve's; the offset moves to even odds


def test_relevance_is_monotone_per_pair_and_comparable_across_pairs(tmp_path):
    rng = np.random.default_rng(1)
    samples = {}
    for key, (pos, neg) in {"text->image": (0.3, 0.1), "text->text": (0.6, 0.2)}.items():
        x = np.r_[rng.normal(pos, 0.05, 300), rng.normal(neg, 0.05, 3000)]
        samples[key] = (list(x), [1] * 300 + [0] * 3000)
    cal = fit(samples)
    cal.save(tmp_path / "calibration.json")
    cal = Calibration.load(tmp_path)
    s = np.linspace(-0.2, 1.0, 50)
    r = cal.relevance(s, [("text", 1.0)], "image")
    assert np.all(np.diff(r) >= 0) and r[0] < 0.01 < 0.99 < r[-1] and 0 <= r.min() and r.max() <= 1
    # a typical match of each pair is about as relevant, although the cosines differ by 0.3
    image_match = cal.relevance([0.3], [("text", 1.0)], "image")[0]
    note_match = cal.relevance([0.6], [("text", 1.0)], "text")[0]
    assert image_match > 0.9 and note_match > 0.9
    assert cal.relevance([0.3], [("text", 1.0)], "text")[0] < 0.1  # an image-level cosine is weak for notes
    # a pair without its own fit falls back to the pooled one; re-ranked falls back to first stage
    assert cal.params([("audio", 1.0)], "audio") == tuple(cal.pairs["*"])
    assert cal.params([("text", 1.0)], "image", "rerank") == tuple(cal.pairs[pair_key("text", "image")])
    # several inputs: the weighted mean of their pairs' parameters
    a1, b1 = cal.pairs["text->image"]
    a2, b2 = cal.pairs["*"]
    assert cal.params([("text", 2.0), ("image", 1.0), ("text", -1.0)], "image") == \
        pytest.approx(((2 * a1 + a2) / 3, (2 * b1 + b2) / 3))


def test_uncalibrated_models_show_clipped_cosines_and_bad_files_are_refused(tmp_path):
    cal = Calibration.load(None)
    assert not cal.calibrated
    assert list(cal.relevance([-0.5, 0.25, 1.2], [("text", 1.0)], "image")) == [0.0, 0.25, 1.0]
    (tmp_path / "calibration.json").write_text(json.dumps({"pairs": {"text->image": [-1.0, 0.0]}}))
    with pytest.raises(ValueError, match="positive slope"):
        Calibration.load(tmp_path)

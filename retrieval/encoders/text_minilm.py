"""Text tower: sentence-transformers all-MiniLM-L6-v2 (mean pooling), locked.

Its token features are the last hidden states of the word pieces (the sentence
vector is their mean, so they live in the same space), at most ``MAX_TOKEN_FEATURES``.

Why no ``transformers``: importing it and ``AutoModel.from_pretrained`` cost ~3.5 s
of a cold ``retrieval search`` (modeling_utils drags in torch.distributed, dynamo,
scipy...). A BERT encoder is small: the HF ``tokenizers`` library reads the same
``tokenizer.json`` (lower-casing and accents are in it) and each BERT layer is
exactly a post-norm ``torch.nn.TransformerEncoderLayer``. tests/test_text_tower.py
checks the outputs against the transformers reference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .base import ModelError, Tower
from .device import torch_device

MAX_TOKEN_FEATURES = 32


class _Bert(nn.Module):
    """BERT embeddings + post-norm encoder layers; returns the last hidden states."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        d, eps = int(cfg["hidden_size"]), float(cfg.get("layer_norm_eps", 1e-12))
        self.word_embeddings = nn.Embedding(int(cfg["vocab_size"]), d)
        self.position_embeddings = nn.Embedding(int(cfg["max_position_embeddings"]), d)
        self.token_type_embeddings = nn.Embedding(int(cfg.get("type_vocab_size", 2)), d)
        self.norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, int(cfg["num_attention_heads"]), int(cfg["intermediate_size"]),
                                       dropout=0.0, activation="gelu", layer_norm_eps=eps,
                                       batch_first=True, norm_first=False)
            for _ in range(int(cfg["num_hidden_layers"])))

    def load_hf(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy a BertModel state dict (keys with or without a ``bert.`` prefix) into these modules."""
        w = {k.removeprefix("bert."): v for k, v in weights.items()}
        e = "embeddings."
        state = {"word_embeddings.weight": w[e + "word_embeddings.weight"],
                 "position_embeddings.weight": w[e + "position_embeddings.weight"],
                 "token_type_embeddings.weight": w[e + "token_type_embeddings.weight"],
                 "norm.weight": w[e + "LayerNorm.weight"], "norm.bias": w[e + "LayerNorm.bias"]}
        for i in range(len(self.layers)):
            p, q = f"encoder.layer.{i}.", f"layers.{i}."
            for kind in ("weight", "bias"):
                state[q + "self_attn.in_proj_" + kind] = torch.cat(
                    [w[f"{p}attention.self.{n}.{kind}"] for n in ("query", "key", "value")])
                for ours, theirs in (("self_attn.out_proj", "attention.output.dense"), ("norm1", "attention.output.LayerNorm"),
                                     ("linear1", "intermediate.dense"), ("linear2", "output.dense"),
                                     ("norm2", "output.LayerNorm")):
                    state[f"{q}{ours}.{kind}"] = w[f"{p}{theirs}.{kind}"]
        self.load_state_dict(state, strict=True)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        x = self.norm(x)
        padding = ~mask.bool()  # True = ignore (torch's convention)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
        return x  # padded positions are undefined (the fast path may zero them): callers mask them out


class MiniLMText(Tower):
    modality = "text"

    def __init__(self, model_dir: Path, max_tokens: int = 256, batch_size: int = 64) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        try:
            cfg = json.loads((model_dir / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read the text tower's config {model_dir / 'config.json'}: {exc}") from exc
        needed = ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers",
                  "max_position_embeddings", "vocab_size")
        if (cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute"
                or any(k not in cfg for k in needed)):
            raise ModelError(f"{model_dir / 'config.json'}: the MiniLM text tower supports BERT-style configs only "
                             f"(absolute positions, hidden_act 'gelu', and {', '.join(needed)})")
        self.max_tokens = min(int(max_tokens), int(cfg["max_position_embeddings"]))
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)  # tokenizer.json ships fixed 128: override both
        pad = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_type_id=pad.get("pad_type_id", 0),
                                      pad_token=pad.get("pad_token", "[PAD]"))  # pad to the longest
        self.device = torch_device()
        model = _Bert(cfg)
        try:
            model.load_hf(load_file(str(model_dir / "model.safetensors")))
        except (KeyError, RuntimeError) as exc:
            raise ModelError(f"{model_dir / 'model.safetensors'} is not a BERT checkpoint matching its config: {exc}") from exc
        self.model = model.to(self.device).eval()
        self.dim = int(cfg["hidden_size"])

    def _encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hidden (B, T, D) on device, attention mask (B, T) bool on CPU, special-tokens mask (B, T) bool on CPU)."""
        enc = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.bool)
        special = torch.tensor([e.special_tokens_mask for e in enc], dtype=torch.bool)
        hidden = self.model(ids.to(self.device), mask.to(self.device))
        return hidden, mask, special

    @torch.inference_mode()
    def _embed(self, batch: Sequence[str]) -> tuple[np.ndarray, list[None]]:
        vectors, _ = self._run(batch, tokens=False)
        return vectors, [None] * len(batch)

    @torch.inference_mode()
    def _tokens(self, batch: Sequence[str]) -> list[np.ndarray]:
        return self._run(batch, tokens=True)[1]

    @torch.inference_mode()
    def _embed_with_tokens(self, batch: Sequence[str]) -> tuple[np.ndarray, list[None], list[np.ndarray]]:
        vectors, tokens = self._run(batch, tokens=True)
        return vectors, [None] * len(batch), tokens

    def _run(self, batch: Sequence[str], tokens: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """One pass over ``batch``: sentence vectors (masked mean of the hidden states) and, if ``tokens``, per
        text its mean then its word pieces (at most ``MAX_TOKEN_FEATURES``), from the same hidden states."""
        texts = [str(t) for t in batch]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        out = []
        toks: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            hidden, mask, special = self._encode_batch([texts[i] for i in rows])
            m = mask.to(self.device).unsqueeze(-1)
            pooled = hidden.masked_fill(~m, 0).sum(1) / m.sum(1).clamp(min=1)  # whatever padded rows hold
            pooled = pooled.float().cpu()
            out.append(pooled.numpy())
            if tokens:
                for i, h, p, mk, sp in zip(rows, hidden.float().cpu(), pooled, mask, special):
                    toks[i] = torch.cat([p[None], h[mk & ~sp][:MAX_TOKEN_FEATURES]]).numpy()
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        vectors[order] = np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
        return vectors, toks

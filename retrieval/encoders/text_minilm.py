"""Text tower: sentence-transformers all-MiniLM-L6-v2 (mean pooling), locked.

Its token features are the last hidden states of the word pieces (the sentence
vector is their mean, so they live in the same space), at most ``MAX_TOKEN_FEATURES``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import Tower
from .device import torch_device

MAX_TOKEN_FEATURES = 32


class MiniLMText(Tower):
    modality = "text"

    def __init__(self, model_dir: Path, max_tokens: int = 256, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.device = torch_device()
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_tokens = max_tokens
        self.batch_size = batch_size

    @torch.inference_mode()
    def _embed(self, batch: Sequence[str]) -> tuple[np.ndarray, list[None]]:
        texts = [str(t) for t in batch]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        out = []
        for start in range(0, len(order), self.batch_size):
            chunk = [texts[i] for i in order[start:start + self.batch_size]]
            tokens = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            ).to(self.device)
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(pooled.float().cpu().numpy())
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        vectors[order] = np.concatenate(out)
        return vectors, [None] * len(batch)

    @torch.inference_mode()
    def _tokens(self, batch: Sequence[str]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(batch), self.batch_size):
            chunk = [str(t) for t in batch[start:start + self.batch_size]]
            tokens = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_tokens,
                                    return_tensors="pt", return_special_tokens_mask=True)
            special = tokens.pop("special_tokens_mask").bool()
            tokens = tokens.to(self.device)
            hidden = self.model(**tokens).last_hidden_state.float().cpu()
            mask = tokens["attention_mask"].cpu().bool()
            for h, m, sp in zip(hidden, mask, special):
                pooled = h[m].mean(0, keepdim=True)
                words = h[m & ~sp][:MAX_TOKEN_FEATURES]
                out.append(torch.cat([pooled, words]).numpy())
        return out

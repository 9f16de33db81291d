"""The bundled speech tower: Whisper tiny.en encoder frames -> attention pooling ->
MLP into the text space (SpeechCLIP-style), fused with the ASR cascade.

Two views of one clip: the learned head (robust to garbled words it trained on)
and the cascade (transcript -> text tower; open vocabulary). ``FusedSpeech`` mixes
the two unit vectors with a gate driven by the ASR's confidence:
``w = sigmoid(a * asr_logprob + b)``, ``v = w * cascade + (1 - w) * head``; ``a`` and
``b`` are fitted on held-out speech after training (``retrieval.training``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .base import Tower, l2_normalize
from .device import torch_device
from .speech_asr import AsrCascadeSpeech
from .whisper_frames import WhisperFrames

WHISPER_DIM = 384
MAX_FRAME_TOKENS = 32  # frame tokens per clip for the re-ranker (average-pooled over time)


class FrameBlock(nn.Module):
    """A residual depthwise-separable convolution over time (kernel 5, ~100 ms at 50 frames/s): cheap enough
    to run on every frame, local enough for a CTC loss to shape (as in QuartzNet-style CTC front ends)."""

    def __init__(self, dim: int, kernel: int = 5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.pointwise = nn.Linear(dim, dim)
        nn.init.zeros_(self.pointwise.weight)  # starts as the identity: a warm start keeps its pooled features
        nn.init.zeros_(self.pointwise.bias)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm(x)
        if pad_mask is not None:
            y = y.masked_fill(pad_mask[..., None], 0.0)
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        return x + self.pointwise(nn.functional.gelu(y))


class AttentionPoolHead(nn.Module):
    """Learned queries attend over encoder frames; their outputs are joined and projected.

    ``frame_layers`` > 0 puts that many :class:`FrameBlock` layers over the frames first; in
    training a CTC loss on their output (characters of the transcript) makes the frames the
    head pools carry the sound of the words, not only a closed vocabulary.
    """

    def __init__(self, dim: int = 384, frame_dim: int = WHISPER_DIM, queries: int = 4, heads: int = 4, hidden: int = 768,
                 frame_layers: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(frame_dim)
        self.frame_block = nn.ModuleList(FrameBlock(frame_dim) for _ in range(frame_layers))
        self.queries = nn.Parameter(torch.randn(queries, frame_dim) * 0.02)
        self.attn = nn.MultiheadAttention(frame_dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(queries * frame_dim), nn.Linear(queries * frame_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def frame_features(self, frames: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, F) normalised frames after the frame layers (what the queries attend over and CTC reads)."""
        x = self.norm(frames)
        for layer in self.frame_block:
            x = layer(x, pad_mask)
        return x

    def forward(self, frames: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, T, F); pad_mask (B, T) True where padding."""
        return self.pool(self.frame_features(frames, pad_mask), pad_mask)

    def pool(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frame features (B, T, F) -> (B, dim) by the learned queries."""
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        pooled, _ = self.attn(q, x, x, key_padding_mask=pad_mask, need_weights=False)
        return self.mlp(pooled.flatten(1))

    def frame_tokens(self, frames: torch.Tensor, max_tokens: int = MAX_FRAME_TOKENS) -> torch.Tensor:
        """(T, F) frames of one clip -> (<= max_tokens, dim): frames average-pooled over time, each projected
        as if every query attended to it alone (value and output projections, then the MLP)."""
        if len(self.frame_block):
            x = self.frame_features(frames[None])[0]
            if len(x) > max_tokens:
                x = nn.functional.adaptive_avg_pool1d(x.T[None], max_tokens)[0].T
        else:  # the first-generation head: pool the raw frames, then normalise (as it was trained)
            if len(frames) > max_tokens:
                frames = nn.functional.adaptive_avg_pool1d(frames.T[None], max_tokens)[0].T
            x = self.norm(frames)
        e = self.attn.embed_dim
        v = nn.functional.linear(x, self.attn.in_proj_weight[2 * e:], self.attn.in_proj_bias[2 * e:])
        o = self.attn.out_proj(v)
        return self.mlp(o.repeat(1, self.queries.shape[0]))


def pad_frames(frames: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (T_i, F) -> (B, T_max, F) float tensor and a (B, T_max) padding mask."""
    t_max = max(len(f) for f in frames)
    x = torch.zeros(len(frames), t_max, frames[0].shape[1])
    mask = torch.ones(len(frames), t_max, dtype=torch.bool)
    for i, f in enumerate(frames):
        x[i, : len(f)] = torch.as_tensor(np.asarray(f, dtype=np.float32)) if not isinstance(f, torch.Tensor) else f.float()
        mask[i, : len(f)] = False
    return x, mask


class HeadSpeech(Tower):
    """Whisper encoder frames -> trained attention-pooling head."""

    modality = "audio"

    def __init__(self, weights: Path, frames: WhisperFrames, dim: int, arch: dict[str, int]) -> None:
        from .image_cnn import load_state

        self.dim = dim
        self.frames = frames
        self.device = torch_device()
        self.net = AttentionPoolHead(dim, **arch)
        self.net.load_state_dict(load_state(weights))
        self.net.eval().to(self.device)

    @torch.inference_mode()
    def _embed(self, batch: Sequence[np.ndarray]) -> tuple[np.ndarray, list[dict[str, Any] | None]]:
        if not batch:
            return np.zeros((0, self.dim), np.float32), []
        x, mask = pad_frames(self.frames.frames(batch))
        return self.net(x.to(self.device), mask.to(self.device)).float().cpu().numpy(), [None] * len(batch)

    @torch.inference_mode()
    def _tokens(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.tokens_from_frames(self.frames.frames(batch))

    @torch.inference_mode()
    def _embed_with_tokens(self, batch: Sequence[np.ndarray]) -> tuple[np.ndarray, list[None], list[np.ndarray]]:
        """One Whisper encoder pass (the expensive part) feeds both the pooled vector and the frame tokens."""
        if not batch:
            return np.zeros((0, self.dim), np.float32), [], []
        pooled, tokens = self._pooled_and_tokens(self.frames.frames(batch))
        return pooled, [None] * len(batch), tokens

    @torch.inference_mode()
    def tokens_from_frames(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Pooled head vector first, then the frame tokens (also used on the training set's stored frames)."""
        return self._pooled_and_tokens(frames)[1]

    def _pooled_and_tokens(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        x, mask = pad_frames(frames)
        pooled = self.net(x.to(self.device), mask.to(self.device)).float().cpu()
        tokens = [torch.cat([p[None], self.net.frame_tokens(torch.as_tensor(np.asarray(f, np.float32)).to(self.device)).float().cpu()]).numpy()
                  for p, f in zip(pooled, frames)]
        return pooled.numpy(), tokens


class FusedSpeech(Tower):
    """Confidence-gated fusion of the learned head and the ASR cascade (notes come from the cascade)."""

    modality = "audio"

    def __init__(self, head: HeadSpeech, cascade: AsrCascadeSpeech, gate: dict[str, float], mode: str = "fused") -> None:
        if mode not in ("fused", "head", "cascade"):
            raise ValueError(f"unknown speech fusion mode '{mode}' (fused, head or cascade)")
        self.head, self.cascade, self.mode = head, cascade, mode
        self.a, self.b = float(gate["a"]), float(gate["b"])
        self.dim = cascade.dim

    def cascade_weight(self, asr_logprob: float | None) -> float:
        if asr_logprob is None or not math.isfinite(asr_logprob):
            return 0.0  # no words recognised: trust the head alone
        return 1.0 / (1.0 + math.exp(-(self.a * asr_logprob + self.b)))

    def _embed(self, batch: Sequence[np.ndarray]) -> tuple[np.ndarray, list[dict[str, Any] | None]]:
        casc, notes = self.cascade._embed(batch)
        if self.mode == "cascade":
            return casc, notes
        head, _ = self.head._embed(batch)
        if self.mode == "head":
            return head, notes
        return self.fuse(head, casc, notes), notes

    def _tokens(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The sound's tokens come from the learned head; the transcript is a separate view (retrieval.tokens)."""
        return self.head._tokens(batch)

    def _embed_with_tokens(self, batch: Sequence[np.ndarray]) -> tuple[np.ndarray, list[dict[str, Any] | None],
                                                                        list[np.ndarray]]:
        """The head's frames are computed once for its vector and its tokens (the cascade runs its own ASR)."""
        casc, notes = self.cascade._embed(batch)
        head, _, tokens = self.head._embed_with_tokens(batch)
        if self.mode == "cascade":
            return casc, notes, tokens
        if self.mode == "head":
            return head, notes, tokens
        return self.fuse(head, casc, notes), notes, tokens

    def fuse(self, head: np.ndarray, cascade: np.ndarray, notes: Sequence[dict[str, Any] | None]) -> np.ndarray:
        """``w * cascade + (1 - w) * head`` per clip, ``w`` from the ASR's confidence (not normalised)."""
        w = np.array([[self.cascade_weight(n.get("asr_logprob")) if n and n.get("transcript") else 0.0] for n in notes],
                     np.float32)
        return w * l2_normalize(cascade) + (1 - w) * l2_normalize(head)

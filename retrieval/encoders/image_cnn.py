"""The bundled image tower: a small residual CNN on 64x64 RGB, trained LiT-style
against the locked MiniLM text tower (see retrieval/training).

Pure math after the decoder: takes RGB PIL images (alpha already composited by
``decoders.load_image``), resizes the shorter side to 64, centre-crops, normalises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .base import Tower
from .device import torch_device

IMAGE_SIZE = 64


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(y)) + self.skip(x))


class ImageCNN(nn.Module):
    """Stem (stride 2) -> 4 residual stages -> mean+max pooling -> MLP into the text space."""

    def __init__(self, dim: int = 384, widths: Sequence[int] = (32, 64, 128, 256), hidden: int = 512,
                 depths: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.GELU())
        layers, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            layers += [_Block(cin, w, 1 if i == 0 else 2)] + [_Block(w, w, 1) for _ in range(d - 1)]
            cin = w
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * cin, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stages(self.stem(x))
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1 + H*W, dim): the pooled embedding, then each patch of the last feature map projected by
        the same head as if the image were that patch alone (mean = max = the patch's features)."""
        f = self.stages(self.stem(x))
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        patches = f.flatten(2).transpose(1, 2)  # (B, H*W, C)
        return torch.cat([self.head(pooled)[:, None], self.head(torch.cat([patches, patches], dim=-1))], dim=1)


def preprocess(images: Sequence[Any]) -> torch.Tensor:
    """RGB PIL images -> (N, 3, 64, 64) float tensor in [-1, 1]."""
    from PIL import Image

    out = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, im in enumerate(images):
        im = im.convert("RGB")
        w, h = im.size
        s = IMAGE_SIZE / min(w, h)
        im = im.resize((max(IMAGE_SIZE, round(w * s)), max(IMAGE_SIZE, round(h * s))), Image.Resampling.BICUBIC, reducing_gap=2.0)
        left, top = (im.width - IMAGE_SIZE) // 2, (im.height - IMAGE_SIZE) // 2
        out[i] = np.asarray(im.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE)))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(path)).items()}


class CnnImage(Tower):
    modality = "image"

    def __init__(self, weights: Path, dim: int, arch: dict[str, Any]) -> None:
        self.dim = dim
        self.device = torch_device()
        self.net = ImageCNN(dim, **arch)
        self.net.load_state_dict(load_state(weights))
        self.net.eval().to(self.device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def _embed(self, batch: Sequence[Any]) -> tuple[np.ndarray, list[dict[str, Any] | None]]:
        out = []
        for i in range(0, len(batch), 256):
            x = preprocess(batch[i:i + 256]).to(self.device).contiguous(memory_format=torch.channels_last)
            out.append(self.net(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32), [None] * len(batch)

    @torch.inference_mode()
    def _tokens(self, batch: Sequence[Any]) -> list[np.ndarray]:
        return self._embed_with_tokens(batch)[2]

    @torch.inference_mode()
    def _embed_with_tokens(self, batch: Sequence[Any]) -> tuple[np.ndarray, list[None], list[np.ndarray]]:
        """One pass: the first token of :meth:`ImageCNN.tokens` is the pooled embedding ``forward`` returns."""
        vecs, out = [], []
        for i in range(0, len(batch), 256):
            x = preprocess(batch[i:i + 256]).to(self.device).contiguous(memory_format=torch.channels_last)
            t = self.net.tokens(x).float().cpu().numpy()
            vecs.append(t[:, 0])
            out += list(t)
        return np.concatenate(vecs) if vecs else np.zeros((0, self.dim), np.float32), [None] * len(batch), out

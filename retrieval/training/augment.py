"""Batched image augmentations for training the image tower (torch, CPU or CUDA).

Emoji are transparent drawings: each one is composited onto a random background
(solid, gradient, smooth noise, a faded other emoji, or plain white as at run time)
so the tower cannot learn the background, then jittered geometrically and given a
random "style" (posterise, blur, low resolution, outline-ish sharpening, noise).
``vendor_style`` (before compositing) imitates what other drawing sets do: black
outlines on flat colour, flat colour quantisation, gradient / 3-D shading, monochrome
line art from edges, silhouettes, thicker or thinner strokes; the affine jitter adds
small rotations. Everything is drawn from the generator ``g``: deterministic per seed.
No flips or hue shifts: direction and colour carry meaning ("left arrow", "red apple").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _backgrounds(n: int, size: int, pool: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    dev = pool.device
    kind = torch.randint(0, 5, (n,), generator=g).to(dev)
    c1 = torch.rand(n, 3, 1, 1, generator=g).to(dev)
    c2 = torch.rand(n, 3, 1, 1, generator=g).to(dev)
    bg = c1.expand(n, 3, size, size).clone()  # 0: solid
    angle = torch.rand(n, generator=g).to(dev) * 2 * math.pi  # 1: linear gradient
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size, device=dev), torch.linspace(0, 1, size, device=dev), indexing="ij")
    t = (xs[None] * torch.cos(angle)[:, None, None] + ys[None] * torch.sin(angle)[:, None, None])
    t = ((t - t.amin(dim=(1, 2), keepdim=True)) / (t.amax(dim=(1, 2), keepdim=True) - t.amin(dim=(1, 2), keepdim=True) + 1e-6))[:, None]
    grad = c1 * (1 - t) + c2 * t
    noise = F.interpolate(torch.rand(n, 3, 4, 4, generator=g).to(dev), size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    idx = torch.randint(0, len(pool), (n,), generator=g).to(dev)  # 3: a faded, blurred other emoji as clutter
    other = pool[idx].float() / 255
    other_rgb = other[:, :3] * other[:, 3:] + c1 * (1 - other[:, 3:])
    other_rgb = F.avg_pool2d(other_rgb, 5, 1, 2) * 0.35 + c1 * 0.65
    white = torch.ones_like(bg)
    for k, src in ((1, grad), (2, noise), (3, other_rgb), (4, white)):
        sel = kind == k
        bg[sel] = src[sel]
    return bg


def _affine(rgba: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, dev = rgba.shape[0], rgba.device
    scale = torch.empty(n).uniform_(0.65, 1.05, generator=g).to(dev)
    rot = torch.empty(n).uniform_(-0.3, 0.3, generator=g).to(dev)
    tx = torch.empty(n).uniform_(-0.15, 0.15, generator=g).to(dev)
    ty = torch.empty(n).uniform_(-0.15, 0.15, generator=g).to(dev)
    cos, sin = torch.cos(rot) / scale, torch.sin(rot) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(rgba.shape), align_corners=False)
    premult = torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], 1)
    out = F.grid_sample(premult, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out  # premultiplied RGB + alpha


def _style(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    r = torch.rand(n, 6, generator=g).to(dev)
    levels = torch.randint(3, 7, (n, 1, 1, 1), generator=g).to(dev).float()
    post = torch.round(x * (levels - 1)) / (levels - 1)
    x = torch.where((r[:, 0] < 0.15)[:, None, None, None], post, x)
    blur = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    x = torch.where((r[:, 1] < 0.2)[:, None, None, None], blur, x)
    size = x.shape[-1]
    low = F.interpolate(F.interpolate(x, size=size // 2, mode="area"), size=size, mode="bilinear", align_corners=False)
    x = torch.where((r[:, 2] < 0.2)[:, None, None, None], low, x)
    sharp = (x + 1.5 * (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))).clamp(0, 1)
    x = torch.where((r[:, 3] < 0.1)[:, None, None, None], sharp, x)
    gain = torch.empty(n, 1, 1, 1).uniform_(0.75, 1.25, generator=g).to(dev)
    bias = torch.empty(n, 1, 1, 1).uniform_(-0.1, 0.1, generator=g).to(dev)
    x = torch.where((r[:, 4] < 0.5)[:, None, None, None], (x - 0.5) * gain + 0.5 + bias, x)
    noisy = x + torch.randn(x.shape, generator=g).to(dev) * 0.04
    x = torch.where((r[:, 5] < 0.15)[:, None, None, None], noisy, x)
    return x.clamp(0, 1)


def _dilate(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.max_pool2d(x, k, 1, k // 2)


def _erode(x: torch.Tensor, k: int) -> torch.Tensor:
    return -F.max_pool2d(-x, k, 1, k // 2)


# probability of each vendor-style transform (independent; several may stack)
STYLE_P = {"stroke": 0.15, "quantise": 0.15, "outline": 0.15, "shade": 0.15, "lineart": 0.08, "silhouette": 0.06}
_LUMA = (0.3, 0.59, 0.11)


def _stroke(x: torch.Tensor, thick: torch.Tensor, k: int) -> torch.Tensor:
    """Thicker (dilate colour and alpha) or thinner (erode alpha) strokes."""
    rgb, a = x[:, :3], x[:, 3:]
    grown = torch.cat([_dilate(rgb * a, k) / _dilate(a, k).clamp_min(1e-3), _dilate(a, k)], 1)
    return torch.where(thick[:, None, None, None], grown, torch.cat([rgb, _erode(a, k)], 1)).clamp(0, 1)


def _quantise(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.round(x[:, :3] * levels) / levels, x[:, 3:]], 1)


def _outline(x: torch.Tensor, k: int) -> torch.Tensor:
    """Black outline around the shape and along edges between colour regions."""
    rgb, a = x[:, :3], x[:, 3:]
    ring = (_dilate(a, k) - a).clamp(0, 1)
    edge = (_dilate(rgb, 3) - _erode(rgb, 3)).amax(1, keepdim=True).gt(0.35).float() * a
    return torch.cat([rgb * (1 - edge) * (1 - ring), torch.maximum(a, ring)], 1)


def _shade(x: torch.Tensor) -> torch.Tensor:
    """3-D look: light from the top left and a soft highlight."""
    ys = torch.linspace(-1, 1, x.shape[-1], device=x.device)
    light = 1.15 - 0.3 * ((ys[:, None] + ys[None, :]) / 2 + 0.5).clamp(0, 1.5)
    gloss = (1 - ((ys[:, None] + 0.5) ** 2 + (ys[None, :] + 0.4) ** 2) * 4).clamp(0, 1) * 0.35
    return torch.cat([(x[:, :3] * light + gloss).clamp(0, 1), x[:, 3:]], 1)


def _lineart(x: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
    """Monochrome line drawing: the shape's contour plus edges between colour regions, in dark ink."""
    lum = (x[:, :3] * torch.tensor(_LUMA, device=x.device)[None, :, None, None]).sum(1, keepdim=True)
    solid = (x[:, 3:] > 0.5).float()
    contour = _dilate(solid, 3) - _erode(solid, 3)
    inner = ((_dilate(lum, 3) - _erode(lum, 3)) > 0.2).float() * solid
    return torch.cat([ink.expand(-1, 3, *x.shape[2:]), torch.maximum(contour, inner)], 1)


def _silhouette(x: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
    return torch.cat([ink.expand(-1, 3, *x.shape[2:]), x[:, 3:]], 1)


def vendor_style(rgba: torch.Tensor, g: torch.Generator, p: dict[str, float] | None = None) -> torch.Tensor:
    """(N, 4, S, S) float RGBA in [0, 1] (straight alpha) -> the same, restyled like another drawing set.

    Each transform runs only on the images drawn for it, so the cost scales with its probability.
    """
    p = STYLE_P if p is None else p
    n, dev = rgba.shape[0], rgba.device
    r = torch.rand(n, 6, generator=g).to(dev)
    thick = (torch.rand(n, generator=g) < 0.5).to(dev)
    levels = torch.randint(3, 7, (n, 1, 1, 1), generator=g).to(dev).float()
    ink = (torch.rand(n, 3, 1, 1, generator=g) * 0.3).to(dev)  # near-black ink
    k = 3 if rgba.shape[-1] <= 96 else 5  # neighbourhood for strokes and outlines, ~3-4% of the width
    out = rgba.clone()
    steps = (("stroke", lambda x, i: _stroke(x, thick[i], k)), ("quantise", lambda x, i: _quantise(x, levels[i])),
             ("outline", lambda x, i: _outline(x, k)), ("shade", lambda x, i: _shade(x)),
             ("lineart", lambda x, i: _lineart(x, ink[i])), ("silhouette", lambda x, i: _silhouette(x, ink[i])))
    for j, (name, fn) in enumerate(steps):
        idx = (r[:, j] < p[name]).nonzero().flatten()
        if len(idx):
            out[idx] = fn(out[idx], idx)
    return out


def augment(rgba_u8: torch.Tensor, pool: torch.Tensor, g: torch.Generator, styles: bool = False) -> torch.Tensor:
    """(N, 4, S, S) uint8 RGBA -> (N, 3, S, S) float in [-1, 1], augmented (``styles``: also ``vendor_style``)."""
    rgba = rgba_u8.float() / 255
    if styles:
        rgba = vendor_style(rgba, g)
    fg = _affine(rgba, g)
    bg = _backgrounds(len(rgba), rgba.shape[-1], pool, g)
    x = fg[:, :3] + bg * (1 - fg[:, 3:])
    return _style(x, g) * 2 - 1


def plain(rgba_u8: torch.Tensor) -> torch.Tensor:
    """Composite onto white without augmentation, as ``decoders.load_image`` does at run time."""
    rgba = rgba_u8.float() / 255
    return (rgba[:, :3] * rgba[:, 3:] + (1 - rgba[:, 3:])) * 2 - 1

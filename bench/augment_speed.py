"""Augmentation throughput on CPU (images/s) at 64, 96 and 128 px, with and without vendor styles.

Run: OMP_WAIT_POLICY=PASSIVE python bench/augment_speed.py [--sheet out.png]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from retrieval.training.augment import augment, vendor_style


def _drawings(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    r = torch.rand(n, 1, 1, generator=g) * 0.5 + 0.3
    a = ((xs ** 2 + ys ** 2) < r ** 2).float()
    rgb = torch.rand(n, 3, 1, 1, generator=g) * (0.6 + 0.4 * (ys > 0).float())
    return (torch.cat([rgb.expand(n, 3, size, size), a[:, None]], 1) * 255).to(torch.uint8)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = {}
    for size in (64, 96, 128):
        g = torch.Generator().manual_seed(0)
        x = _drawings(a.n, size, g)
        for styles in (False, True):
            augment(x[:16], x, g, styles=styles)
            t = time.perf_counter()
            for _ in range(3):
                augment(x, x, g, styles=styles)
            out[f"{size}px styles={styles}"] = round(3 * a.n / (time.perf_counter() - t))
        t = time.perf_counter()
        vendor_style(x.float() / 255, g, {k: 1.0 for k in ("stroke", "quantise", "outline", "shade", "lineart", "silhouette")})
        out[f"{size}px vendor_style all on"] = round(a.n / (time.perf_counter() - t))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

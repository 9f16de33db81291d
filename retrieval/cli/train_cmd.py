"""`python -m retrieval build-data` and `python -m retrieval train`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def run_build_data(args: argparse.Namespace) -> int:
    from ..training.build import build

    logging.getLogger("retrieval").setLevel(logging.INFO)
    out = build(Path(args.out), Path(args.cache), seed=args.seed, held_out=args.held_out, workers=args.workers,
                styles=args.styles, speech=not args.no_speech)
    print(f"training data ready in {out}")
    return 0


def _given(args: argparse.Namespace, **defaults: object) -> dict:
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}


def run_train(args: argparse.Namespace) -> int:
    export = Path(args.export) if args.export else None
    if args.stage == "calibrate":
        from ..training.calibrate import calibrate

        if export is None:
            raise ValueError("--stage calibrate writes calibration.json into the model folder: give --export, "
                             "e.g. --export retrieval/models/triad-mini")
        print(json.dumps(calibrate(Path(args.data), args.model or "triad-mini", export,
                                   register=args.model or "triad-mini")))
        return 0
    if args.stage == "recipe":  # the whole documented recipe, resumable (retrieval/training/recipe.py)
        from ..training.recipe import RecipeConfig, run_recipe

        logging.getLogger("retrieval").setLevel(logging.INFO)
        rc = RecipeConfig(data=Path(args.data), export=export or RecipeConfig.export, seed=args.seed,
                          device=args.device, minutes=args.minutes or RecipeConfig.minutes)
        print(json.dumps(run_recipe(rc)))
        return 0
    if args.stage == "rerank":
        from ..training.rerank_train import RerankConfig, train_reranker

        out = Path(args.out)
        if args.no_resume and (out / "rerank_checkpoint.pt").is_file():
            (out / "rerank_checkpoint.pt").unlink()
        rcfg = RerankConfig(data=Path(args.data), out=out, seed=args.seed, device=args.device, export=export,
                            fold_run=Path(args.fold_run) if args.fold_run else None,
                            **_given(args, epochs=8, batch=48, steps_per_epoch=150, lr=1e-3))
        print(json.dumps(train_reranker(rcfg)))
        return 0
    from ..training.trainer import TrainConfig, train

    cfg = TrainConfig(data=Path(args.data), out=Path(args.out), minutes=args.minutes or 30.0, soft_targets=args.soft_targets,
                      seed=args.seed, device=args.device, export=export, resume=not args.no_resume, fold=args.fold,
                      ctc=args.ctc, emoji_share=args.emoji_share, styles=not args.no_style_augment,
                      init=args.init, speech_from=args.speech_from, register=args.register or "triad-mini",
                      **_given(args, epochs=0, batch=128, steps_per_epoch=40, lr=2e-3))
    summary = train(cfg)
    print(json.dumps(summary))
    return 0

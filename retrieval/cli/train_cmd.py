"""`python -m retrieval build-data` and `python -m retrieval train`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def run_build_data(args: argparse.Namespace) -> int:
    from ..training.build import build

    logging.getLogger("retrieval").setLevel(logging.INFO)
    out = build(Path(args.out), Path(args.cache), seed=args.seed, held_out=args.held_out, workers=args.workers)
    print(f"training data ready in {out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from ..training.trainer import TrainConfig, train

    cfg = TrainConfig(data=Path(args.data), out=Path(args.out), minutes=args.minutes, epochs=args.epochs,
                      batch=args.batch, steps_per_epoch=args.steps_per_epoch, lr=args.lr, seed=args.seed, device=args.device,
                      export=Path(args.export) if args.export else None, resume=not args.no_resume)
    summary = train(cfg)
    print(json.dumps(summary))
    return 0

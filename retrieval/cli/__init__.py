"""`python -m retrieval search|eval|build-data|train` — the application layer over the library.

Only this package (like ``webui``) may use the indexer, to look up metadata.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..encoders import ModelError
from ..index import IndexMismatchError


class _AppendInput(argparse.Action):
    """Collect --text/--image/--audio in command-line order as (modality, value)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        items = list(getattr(namespace, "inputs", None) or [])
        items.append((self.const, values))
        namespace.inputs = items


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m retrieval", description="Cross-modal search over an indexed archive.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="search with text, image and/or audio inputs (several = one fused query)")
    s.add_argument("--text", action=_AppendInput, const="text", dest="inputs", metavar="T")
    s.add_argument("--image", action=_AppendInput, const="image", dest="inputs", metavar="FILE")
    s.add_argument("--audio", action=_AppendInput, const="audio", dest="inputs", metavar="FILE")
    s.add_argument("--target", default="all", choices=["image", "audio", "text", "all"])
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--data-dir")
    s.add_argument("--model", help="refuse to run unless the index was built with this model")
    s.add_argument("--json", action="store_true")

    e = sub.add_parser("eval", help="recall@k / mAP on a labelled JSONL manifest, through the real pipeline")
    e.add_argument("--manifest", required=True)
    e.add_argument("--model")
    e.add_argument("--no-rerank", action="store_true",
                   help="first-stage search only (re-ranking is not part of this release yet, so this is the default)")
    e.add_argument("--json", action="store_true")
    e.add_argument("--keep-data-dir", help="index into this folder instead of a temporary one")

    b = sub.add_parser("build-data", help="regenerate the training set (npm emoji packages, synthesised speech)")
    b.add_argument("--out", default="data/train", help="dataset folder (default data/train)")
    b.add_argument("--cache", default="data/cache", help="where npm packages are downloaded (default data/cache)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--held-out", type=float, default=0.15, help="fraction of concepts kept out of training")
    b.add_argument("--workers", type=int, default=2)

    t = sub.add_parser("train", help="train the image tower and speech head against the locked text tower")
    t.add_argument("--data", default="data/train", help="dataset built by build-data (default data/train)")
    t.add_argument("--out", default="data/runs/triad-mini", help="run folder: checkpoints and exported weights")
    t.add_argument("--minutes", type=float, default=30.0, help="training time budget (default 30)")
    t.add_argument("--epochs", type=int, default=0, help="stop after this many epochs (0 = time budget only)")
    t.add_argument("--batch", type=int, default=128, help="concepts per step (two images each)")
    t.add_argument("--steps-per-epoch", type=int, default=40, help="steps between validations/checkpoints (default 40)")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    t.add_argument("--export", help="also write the committed model files to this folder (e.g. retrieval/models/triad-mini)")
    t.add_argument("--no-resume", action="store_true", help="start over even if the run folder has a checkpoint")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.command == "search":
            from .search_cmd import run_search

            return run_search(args)
        if args.command in ("build-data", "train"):
            from .train_cmd import run_build_data, run_train

            return run_build_data(args) if args.command == "build-data" else run_train(args)
        from .eval_cmd import run_eval

        return run_eval(args)
    except (FileNotFoundError, ValueError, ModelError, IndexMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

"""`python -m retrieval search|eval|build-data|train` — the application layer over the library.

Only this package (like ``webui``) may use the indexer, to look up metadata.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..encoders import ModelError
from ..fusion import MAX_WEIGHT
from ..index import IndexMismatchError
from ..query import QueryError


class _AppendInput(argparse.Action):
    """Collect --text/--image/--audio (weight 1) and --not-* (weight -1) in order as (modality, value, weight)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        items = list(getattr(namespace, "inputs", None) or [])
        modality, sign = self.const
        items.append((modality, values, sign * 1.0))
        namespace.inputs = items
        namespace.weighted = False


class _SetWeight(argparse.Action):
    """--weight W: the weight of the input just before it (on a --not-* input, how hard it pushes away)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        items = list(getattr(namespace, "inputs", None) or [])
        if not items:
            raise argparse.ArgumentError(self, "comes after the input it weighs, e.g. --text red --weight 0.5")
        if getattr(namespace, "weighted", False):
            raise argparse.ArgumentError(self, "was given twice for the same input; give one --weight per input")
        try:
            weight = float(values)
        except ValueError:
            raise argparse.ArgumentError(self, f"'{values}' is not a number; use e.g. --weight 0.5") from None
        if not (0 < abs(weight) <= MAX_WEIGHT):  # also refuses nan and inf
            raise argparse.ArgumentError(self, f"must be a non-zero number between -{MAX_WEIGHT:g} and "
                                               f"{MAX_WEIGHT:g}, got {values}")
        modality, value, old = items[-1]
        if old < 0 and weight < 0:
            raise argparse.ArgumentError(self, f"after --not-{modality} must be positive: it says how strongly "
                                               "to push away")
        items[-1] = (modality, value, -weight if old < 0 else weight)
        namespace.inputs = items
        namespace.weighted = True


SEARCH_EPILOG = """Several inputs are one query: every hit must match all of them (attention fusion,
see README "Multi-input queries"). --not-text/--not-image/--not-audio add "not this"
inputs that push matching items down. --weight W sets the weight of the input just
before it (default 1; non-zero, at most 2 in size; a negative weight on a plain
input is the same as --not-*). Example:
  python -m retrieval search --image apple.png --text green --weight 0.5 --not-text leaf
"""


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m retrieval", description="Cross-modal search over an indexed archive.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="search with text, image and/or audio inputs (several = one fused query)",
                       epilog=SEARCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--text", action=_AppendInput, const=("text", 1), dest="inputs", metavar="T", help="words")
    s.add_argument("--image", action=_AppendInput, const=("image", 1), dest="inputs", metavar="FILE",
                   help="an image file")
    s.add_argument("--audio", action=_AppendInput, const=("audio", 1), dest="inputs", metavar="FILE",
                   help="an audio file (speech)")
    s.add_argument("--not-text", action=_AppendInput, const=("text", -1), dest="inputs", metavar="T",
                   help="\"not this\": push items about these words down")
    s.add_argument("--not-image", action=_AppendInput, const=("image", -1), dest="inputs", metavar="FILE",
                   help="\"not this\": push items like this image down")
    s.add_argument("--not-audio", action=_AppendInput, const=("audio", -1), dest="inputs", metavar="FILE",
                   help="\"not this\": push items like this recording down")
    s.add_argument("--weight", action=_SetWeight, dest="inputs", metavar="W",
                   help=f"weight of the input just before it (default 1, non-zero, |W| <= {MAX_WEIGHT:g})")
    s.add_argument("--vector-file", action="append", metavar="FILE",
                   help="a raw query vector in the index's model space (.npy or a JSON list of numbers)")
    s.add_argument("--target", default="all", choices=["image", "audio", "text", "video", "all"])
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--data-dir")
    s.add_argument("--model", help="refuse to run unless the index was built with this model")
    s.add_argument("--json", action="store_true")
    s.add_argument("--hybrid", action="store_true",
                   help="also match the --text words in transcripts, notes and file names (full-text search), "
                        "fused with the vector hits by reciprocal rank fusion")
    s.add_argument("--no-rerank", action="store_true", help="first-stage search only (no cross-attention re-ranking)")
    s.add_argument("--rerank-k", type=_positive_int, default=None, help="re-rank this many first-stage hits (default 100)")
    s.add_argument("--rerank-weight", type=float, default=None,
                   help="scale of the re-ranker's correction to the first-stage score (default 1 = the per-pair "
                        "weights chosen on validation data; 0 = off)")

    e = sub.add_parser("eval", help="recall@k / mAP on a labelled JSONL manifest, through the real pipeline")
    e.add_argument("--manifest", required=True)
    e.add_argument("--model")
    e.add_argument("--no-rerank", action="store_true", help="first-stage search only (no cross-attention re-ranking)")
    e.add_argument("--rerank-k", type=_positive_int, default=None, help="re-rank this many first-stage hits (default 100)")
    e.add_argument("--rerank-weight", type=float, default=None,
                   help="scale of the re-ranker's correction (default 1 = the per-pair weights chosen on validation data)")
    e.add_argument("--json", action="store_true")
    e.add_argument("--keep-data-dir", help="index into this folder instead of a temporary one")
    e.add_argument("--rankings", metavar="FILE", help="also write each query's ranked gallery row ids (JSONL)")

    b = sub.add_parser("build-data", help="regenerate the training set (npm emoji packages, synthesised speech)")
    b.add_argument("--out", default="data/train", help="dataset folder (default data/train)")
    b.add_argument("--cache", default="data/cache", help="where npm packages are downloaded (default data/cache)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--held-out", type=float, default=0.15, help="fraction of concepts kept out of training")
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--styles", choices=["all", "emoji-only", "none"], default="all",
                   help="extra drawing styles from Iconify sets on npm: emoji and icon sets (default), the emoji "
                        "sets only, or none (the two emoji vendors only)")
    b.add_argument("--no-speech", action="store_true", help="skip speech synthesis and Whisper frames")

    t = sub.add_parser("train", help="train the image tower and speech head (stage joint) or the re-ranker (stage rerank)")
    t.add_argument("--stage", choices=["joint", "rerank", "calibrate", "recipe"], default="joint",
                   help="joint: image tower + speech head against the locked text tower (default); rerank: the "
                        "cross-attention re-ranker on the bundled model's features, with hard negatives; calibrate: "
                        "fit the per-pair score calibration on the held-out concepts (after the other two); recipe: the whole "
                        "recipe (build-data, joint, fold, rerank, calibrate), resumable")
    t.add_argument("--model", help="calibrate: the bundled model to calibrate (default triad-mini)")
    t.add_argument("--data", default="data/train", help="dataset built by build-data (default data/train)")
    t.add_argument("--out", default="data/runs/triad-mini", help="run folder: checkpoints and exported weights")
    t.add_argument("--minutes", type=float, default=None,
                   help="joint: training time budget (default 30); recipe: the joint run's budget (default 55)")
    t.add_argument("--epochs", type=int, default=None, help="stop after this many epochs (joint: default 0 = time budget only; rerank: 8)")
    t.add_argument("--batch", type=int, default=None, help="joint: concepts per step (default 128); rerank: queries per step (48)")
    t.add_argument("--steps-per-epoch", type=int, default=None, help="steps between validations/checkpoints (joint 40, rerank 150)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (joint 2e-3, rerank 1e-3)")
    t.add_argument("--soft-targets", type=float, default=0.0,
                   help="joint: weight of soft caption targets from the locked text tower's own similarities (default 0 = off; see the model card)")
    t.add_argument("--fold", type=float, default=0.0,
                   help="joint: also keep this fraction of training concepts out (a cross-fitting run whose export "
                        "gives the re-ranker unseen-concept features; not for shipping)")
    t.add_argument("--fold-run", help="rerank: the run folder of a --fold joint run; the re-ranker trains on its "
                                      "kept-out concepts, embedded by its towers (out-of-fold features)")
    t.add_argument("--ctc", type=float, default=0.3, help="joint: weight of the speech head's auxiliary CTC loss (0 = off)")
    t.add_argument("--emoji-share", type=float, default=0.5, help="joint: share of each batch from emoji concepts (rest: icons)")
    t.add_argument("--no-style-augment", action="store_true", help="joint: no vendor-style picture augmentation")
    t.add_argument("--init", help="joint: start from this registered bundled model's towers (e.g. triad-mini-2)")
    t.add_argument("--speech-from", help="joint: train the image tower only and ship this registered model's speech "
                                         "head and gate unchanged (e.g. triad-mini-v1)")
    t.add_argument("--register", help="joint: the registry name --export is recorded under (default triad-mini)")
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
    except (FileNotFoundError, ValueError, QueryError, ModelError, IndexMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

"""`python -m retrieval search|eval` — the application layer over the library.

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
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.command == "search":
            from .search_cmd import run_search

            return run_search(args)
        from .eval_cmd import run_eval

        return run_eval(args)
    except (FileNotFoundError, ValueError, ModelError, IndexMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

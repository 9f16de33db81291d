"""`python -m indexer add|errors|rebuild|status` — see README for the contract."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from retrieval.encoders import ModelError
from retrieval.index import IndexMismatchError

from . import repository as repo
from .catalog import Catalog, CatalogBusyError
from .notices import notices
from .db import data_dir_from
from .pipeline import AddOptions, ModelMismatchError, add, check_roots, resolve_model
from .ray_executor import RayExecutorError, connect, disconnect
from .token_sync import missing_tokens, rebuild_tokens


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m indexer", description="Index media folders for cross-modal search.")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("add", help="index files and folders incrementally")
    a.add_argument("paths", nargs="+", type=Path)
    a.add_argument("--data-dir", help="where the database and indices live (default ./data or $RETRIEVAL_DATA_DIR)")
    a.add_argument("--model", help="model name (default: the data dir's model, else the bundled default)")
    a.add_argument("--json", action="store_true", help="print one summary object on stdout")
    a.add_argument("--batch-size", type=int, default=int(os.environ.get("INDEXER_BATCH_SIZE", 32)))
    a.add_argument("--workers", type=int, default=None,
                   help="decoder threads (default 2); with --executor ray: Ray actors (default one per GPU, "
                        "else one per CPU of the cluster)")
    a.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this machine; ray: decode + embed on a Ray cluster, write here (see README)")
    a.add_argument("--address", help="with --executor ray: the cluster, HOST:PORT from `ray start --head` or auto "
                   "(default $RAY_ADDRESS, else a local Ray instance)")
    a.add_argument("--index-factory", default=None,
                   help="FAISS factory string: auto (by size: exact below 200k vectors, then fast-scan PQ with "
                        "exact re-scoring), Flat, 'IVF{n},Flat', HNSW32, ... A typed factory is kept by later runs; "
                        "type auto to go back to choosing by size (default: the earlier choice, else auto)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("errors", help="list files that could not be indexed, with their errors")
    e.add_argument("--data-dir")
    e.add_argument("--json", action="store_true")

    r = sub.add_parser("rebuild", help="rebuild the FAISS indices from stored embeddings (no re-encoding) and "
                       "the token features (re-ranking) of items that have none")
    r.add_argument("--data-dir")
    r.add_argument("--index-factory", default=None,
                   help="as for add (default: the factory typed earlier, else auto by size)")
    tok = r.add_mutually_exclusive_group()
    tok.add_argument("--tokens", action="store_true", help="re-encode the token features of every item (decodes all files again)")
    tok.add_argument("--no-tokens", action="store_true",
                     help="only the indices: leave missing token features to the next `indexer add` (they need the "
                          "files decoded again; `indexer status` counts them)")
    r.add_argument("--json", action="store_true")

    st = sub.add_parser("status", help="model, item counts per modality, last run")
    st.add_argument("--data-dir")
    st.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    data_dir = data_dir_from(args.data_dir)
    if args.command == "add":
        try:  # before the catalog exists: a mistyped path must not create an empty one
            check_roots(args.paths)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.address and args.executor != "ray":
            print("error: --address is for --executor ray; add --executor ray, or drop --address", file=sys.stderr)
            return 2
        if args.executor == "ray":  # fail fast, before the catalog or the model is touched
            try:
                connect(args.address, num_cpus=args.workers)
            except RayExecutorError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            # Ray prints cluster events (a worker died, a task is retried) on sys.stdout: send them to stderr,
            # stdout carries the --json summary only
            args.out, sys.stdout = sys.stdout, sys.stderr
            try:
                return _open_and_run(args, data_dir)
            finally:
                disconnect()
                sys.stdout = args.out
    return _open_and_run(args, data_dir)


def _open_and_run(args: argparse.Namespace, data_dir: Path) -> int:
    try:
        catalog = Catalog(data_dir)
    except Exception as exc:
        print(f"error: cannot open the catalog for {data_dir}: {exc}", file=sys.stderr)
        return 2
    try:
        return _COMMANDS[args.command](args, catalog)
    except (FileNotFoundError, ModelError, ModelMismatchError, IndexMismatchError, CatalogBusyError,
            RayExecutorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        catalog.close()


def _add(args: argparse.Namespace, catalog: Catalog) -> int:
    opts = AddOptions(model=args.model, batch_size=max(1, args.batch_size), workers=max(1, args.workers or 2),
                      factory=args.index_factory, progress=not args.quiet and not args.json,
                      executor=args.executor, address=args.address,
                      ray_workers=max(1, args.workers) if args.workers else None)
    summary = add(args.paths, catalog, opts)
    out = getattr(args, "out", None) or sys.stdout
    if args.json:
        print(json.dumps(summary.as_dict()), file=out)
    else:
        d = summary.as_dict()
        known = f" (+{d['known_errors']} still broken from earlier runs)" if d["known_errors"] else ""
        print(f"added {d['added']}, updated {d['updated']}, unchanged {d['unchanged']}, "
              f"removed {d['removed']}, errors {d['errors']}{known} in {d['timings']['total_s']:.1f}s"
              + ("  (see `python -m indexer errors`)" if d["errors"] or d["known_errors"] else ""), file=out)
        for notice in d.get("notices", []):
            print(f"note: {notice}", file=sys.stderr)
    return 0


def _errors(args: argparse.Namespace, catalog: Catalog) -> int:
    with catalog.session() as s:
        rows = repo.file_errors(s)
    if args.json:
        print(json.dumps({"errors": [{"path": p, "error": e} for p, e in rows]}))
    else:
        for path, err in rows:
            print(f"{path}\n    {err}")
        print(f"{len(rows)} file(s) with errors")
    return 0


def _rebuild(args: argparse.Namespace, catalog: Catalog) -> int:
    catalog.lock()
    try:
        model, checksums, revision = catalog.state()
        if model is None:
            print(f"error: {catalog.data_dir} has no indexed items; run `python -m indexer add PATH`", file=sys.stderr)
            return 2
        counts = {}
        with catalog.session() as s:
            present = repo.item_counts(s)
        for modality in present:
            idx = catalog.rebuild_index(modality, model, checksums, revision, factory=args.index_factory)
            counts[modality] = {"count": idx.count, "factory": idx.manifest.factory}
        tokens = ({"written": 0, "skipped": None, "failed": 0, "deferred": missing_tokens(catalog)} if args.no_tokens
                  else rebuild_tokens(catalog, resolve_model(catalog, model), force=args.tokens))
    finally:
        catalog.unlock()
    if args.json:
        print(json.dumps({**counts, "tokens": tokens}))
    else:
        print("\n".join(f"{m}: {c['count']} vectors ({c['factory']})" for m, c in counts.items()))
        if args.no_tokens:
            print(f"token features: not refilled (--no-tokens); {tokens['deferred']} items have none")
        else:
            print(f"token features: {tokens['written']} written, {tokens['skipped']} kept, {tokens['failed']} failed")
    return 0


def _status(args: argparse.Namespace, catalog: Catalog) -> int:
    model, _, revision = catalog.state()
    with catalog.session() as s:
        counts = repo.item_counts(s)
        errors = len(repo.file_errors(s))
        run = repo.last_run(s)
        last = {"started_at": run.started_at.isoformat(), "summary": run.summary} if run else None
        said = notices(s, model) if model else []
    out = {"data_dir": str(catalog.data_dir), "model": model, "revision": revision, "items": counts,
           "errors": errors, "tokens_missing": missing_tokens(catalog), "last_run": last, "notices": said}
    print(json.dumps(out, default=str) if args.json else json.dumps(out, indent=2, default=str))
    return 0


_COMMANDS = {"add": _add, "errors": _errors, "rebuild": _rebuild, "status": _status}

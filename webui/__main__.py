"""`python -m webui [--data-dir DIR] [--host H] [--port P] [--workers N] [--threads T] [--public]`.

A non-loopback ``--host`` needs ``WEBUI_TOKEN`` (or ``--public``); see :mod:`webui.security`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from indexer.db import data_dir_from

from .security import check_bind
from .server import default_workers, serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m webui", description="Serve the search page and the JSON API.")
    p.add_argument("--data-dir", help="data directory built by `python -m indexer add` (default ./data or $RETRIEVAL_DATA_DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)), help="port (default 8000 or $PORT)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="worker processes, each with its own copy of the model and indices (default: CPU count, at most 4)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    p.add_argument("--public", action="store_true",
                   help="allow a non-loopback --host without WEBUI_TOKEN (anyone who can reach it can use it)")
    p.add_argument("--access-log", action="store_true", help="log every request to stdout")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error("--port must be between 1 and 65535")
    if args.workers < 1 or args.threads < 1:
        p.error("--workers and --threads must be at least 1")
    refusal = check_bind(args.host, os.environ.get("WEBUI_TOKEN"), args.public)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = data_dir_from(args.data_dir)
    if not data_dir.is_dir():
        print(f"note: {data_dir} does not exist yet; the page will say how to index something into it", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Serving {data_dir} at http://{shown}:{args.port}/ "
          f"({args.workers} worker{'s' if args.workers > 1 else ''} x {args.threads} threads, gunicorn)", file=sys.stderr)
    serve(str(data_dir), args.host, args.port, args.workers, args.threads, access_log=args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())

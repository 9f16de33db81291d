"""Production serving: gunicorn with several worker processes, each running a few threads.

Every worker process builds its own app (no ``--preload``: torch and OpenMP
thread pools do not survive ``fork``), so each loads the model and the FAISS
indices once and shares them between its threads. All workers read the same data
directory and never write it (thumbnails go to their own cache folder). The CPU
is split between the workers: each gets ``cpus / workers`` torch and Whisper
threads, so two workers on two cores do not fight over them.

Equivalent command line, for process managers::

    WEBUI_DATA_DIR=/srv/data gunicorn -w 2 --threads 4 -k webui.server.JsonErrorWorker -t 120 \\
        --limit-request-line 8190 --limit-request-field_size 16380 -b 127.0.0.1:8000 'webui:create_app()'
"""

from __future__ import annotations

import json
import os
from typing import Any

from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.gthread import ThreadWorker

from .limits import GUNICORN_FIELD_SIZE, GUNICORN_REQUEST_LINE
from .security import DATA_CSP


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class JsonErrorWorker(ThreadWorker):
    """gunicorn's gthread worker, answering its own 414/431 (request line or header over gunicorn's limit) as the
    API's JSON error instead of an HTML page; everything else as gunicorn does."""

    def handle_error(self, req, client, addr, exc) -> None:
        if not isinstance(exc, (LimitRequestLine, LimitRequestHeaders)):
            return super().handle_error(req, client, addr, exc)
        status, reason, code = ((414, "URI Too Long", "url_too_long") if isinstance(exc, LimitRequestLine)
                                else (431, "Request Header Fields Too Large", "headers_too_large"))
        message = (f"the request line or a header is over the server's limit ({GUNICORN_REQUEST_LINE} bytes for the "
                   f"request line, {GUNICORN_FIELD_SIZE} per header): send long queries as POST /api/search")
        body = json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"X-Content-Type-Options: nosniff\r\nContent-Security-Policy: {DATA_CSP}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        self.log.warning("refused a request from %s: %s", (addr or ("",))[0], exc)
        try:
            util.write_nonblock(client, head + body)
        except OSError:
            self.log.debug("failed to send the error response")


class WebServer(BaseApplication):
    def __init__(self, app_config: dict[str, Any], options: dict[str, Any]) -> None:
        self.app_config = app_config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        from . import create_app

        return create_app(dict(self.app_config))


def serve(data_dir: str, host: str, port: int, workers: int, threads: int, access_log: bool = False,
          timeout: int = 120, extra_config: dict[str, Any] | None = None) -> None:
    per_worker = max(1, (os.cpu_count() or 1) // max(1, workers))
    os.environ.setdefault("RETRIEVAL_ASR_THREADS", str(per_worker))
    os.environ.setdefault("OMP_NUM_THREADS", str(per_worker))
    app_config = {"DATA_DIR": data_dir, "TORCH_THREADS": per_worker, **(extra_config or {})}
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "webui.server.JsonErrorWorker",  # gthread, with JSON for gunicorn's own 414/431
        "limit_request_line": GUNICORN_REQUEST_LINE,  # Flask answers over webui.limits.MAX_URL_BYTES first
        "limit_request_field_size": GUNICORN_FIELD_SIZE,
        "timeout": timeout,  # a long audio query runs Whisper; never kill a worker mid-ASR
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "preload_app": False,
        "proc_name": "webui",
        "control_socket_disable": True,  # one fixed socket path per user would clash between instances
    }
    WebServer(app_config, options).run()

"""Request-line and header limits answered by Flask as JSON, below gunicorn's own (HTML) limits.

gunicorn refuses a request line over ``limit_request_line`` bytes (414) and a header
over ``limit_request_field_size`` (431) with an HTML page before the app sees it;
:mod:`webui.server` sets those to :data:`GUNICORN_REQUEST_LINE` and
:data:`GUNICORN_FIELD_SIZE`, and this module refuses anything over the lower
:data:`MAX_URL_BYTES` / :data:`MAX_HEADER_BYTES` first, as JSON like every other error.
(What still exceeds gunicorn's limits is answered JSON by :class:`webui.server.JsonErrorWorker`.)
"""

from __future__ import annotations

from flask import Flask, request

from .errors import ApiError

MAX_URL_BYTES = 4096  # path + query string
MAX_HEADER_BYTES = 8000  # one header's name + value
GUNICORN_REQUEST_LINE = 8190  # gunicorn's maximum
GUNICORN_FIELD_SIZE = 16380


def register(app: Flask) -> None:
    @app.before_request
    def _check_sizes() -> None:
        url = len(request.environ.get("RAW_URI") or request.full_path)
        if url > MAX_URL_BYTES:
            raise ApiError(f"the address is {url} bytes long; the limit is {MAX_URL_BYTES}: send long queries as "
                           "POST /api/search with a JSON body", 414, "url_too_long")
        for name, value in request.headers.items():
            if len(name) + len(value) > MAX_HEADER_BYTES:
                raise ApiError(f"the {name[:40]} header is {len(name) + len(value)} bytes; the limit is "
                               f"{MAX_HEADER_BYTES} per header: send fewer or smaller cookies or headers",
                               431, "headers_too_large")

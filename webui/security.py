"""Access rules, in one place: who may write, and the headers every response carries.

- **Writing needs the token.** With ``WEBUI_TOKEN`` set (config ``TOKEN``), every request
  that may change something (any method but GET, HEAD and OPTIONS) needs
  ``Authorization: Bearer <token>``, except ``POST /api/search`` and the clip-retrieval compatible
  ``POST /knn-service`` and ``/metadata`` (:mod:`webui.clip_compat`), which only read;
  without it the answer is 401. No route writes yet; this rule covers the ones to come.
- **Binding.** ``python -m webui`` refuses a non-loopback address without a token
  unless told ``--public`` (:func:`check_bind`).
- **Headers.** ``X-Content-Type-Options: nosniff`` and a Content-Security-Policy on
  every response: the pages' policy on HTML, ``default-src 'none'`` on everything else
  (JSON included); routes may set a stricter one themselves (media: ``sandbox``).
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Flask, request

from .errors import ApiError

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_POSTS = frozenset({"/api/search", "/knn-service", "/metadata"})  # searches (clip-retrieval's too)
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
            "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
DATA_CSP = "default-src 'none'; frame-ancestors 'none'"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to a public address


def check_bind(host: str, token: str | None, public: bool) -> str | None:
    """Why serving on ``host`` is refused (None: allowed)."""
    if is_loopback(host) or token or public:
        return None
    return (f"refusing to listen on {host}: other machines could reach the server and nothing protects it. "
            "Set WEBUI_TOKEN to a secret (writing requests then need 'Authorization: Bearer <token>'), pass "
            "--public to serve it openly anyway, or keep the default --host 127.0.0.1")


def register(app: Flask) -> None:
    @app.before_request
    def _require_token() -> None:
        token = app.config.get("TOKEN")
        if not token or request.method in READ_METHODS:
            return
        if request.method == "POST" and request.path in READ_ONLY_POSTS:
            return
        sent = request.headers.get("Authorization", "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), str(token).encode()):
            raise ApiError(f"{request.method} {request.path[:80]} changes data and needs the server's token: send "
                           "'Authorization: Bearer <WEBUI_TOKEN>'", 401, "unauthorized")

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("Content-Security-Policy", PAGE_CSP if resp.mimetype == "text/html" else DATA_CSP)
        if resp.status_code == 401:
            resp.headers.setdefault("WWW-Authenticate", 'Bearer realm="webui"')
        if request.path.startswith("/api/") and request.method == "POST":
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

"""JSON in and out of the API with orjson, the same documents as the standard library's.

A search answer of 100 hits took ~0.3 ms to encode with :mod:`json` (~30 µs with orjson) and a 384-number
query vector ~0.16 ms to parse (~17 µs): on the 1M-item benchmark the server spent ~5 ms of Python around a
5 ms FAISS search at k=100, and this is the part a library does better. Types orjson would write differently
from Flask (dates, dataclasses, ...) still go through Flask's own conversion, and a body orjson refuses is
parsed again by :mod:`json` (which reads ``NaN`` and ``Infinity``), so every error message stays the same.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def loads(data: str | bytes) -> Any:
    """``json.loads``, fast for the well-formed body (the standard library reads what orjson refuses)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with orjson underneath (compact output, keys in the order they were built)."""

    sort_keys = False

    def _pretty(self) -> bool:
        return (self.compact is None and self._app.debug) or self.compact is False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # an explicit option (indent, sort_keys, ...): Flask's own
            return super().dumps(obj, **kwargs)
        return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return super().loads(s, **kwargs) if kwargs else loads(s)

    def response(self, *args: Any, **kwargs: Any):  # noqa: ANN201 - a flask.Response
        if self._pretty():  # debug mode's indented output, as Flask writes it
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(orjson.dumps(obj, default=self.default, option=_OPTIONS) + b"\n",
                                        mimetype=self.mimetype)

"""API fuzzing: schemathesis generates requests from /api/openapi.json and sends them to the app over WSGI, on
a small indexed archive (the demo notes), valid requests and invalid ones (schemathesis' positive and
negative modes). Bounded (``FUZZ_EXAMPLES`` per operation, no deadline per example,
well under 3 minutes); it must find no server error and no status code the document does not list."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install -r requirements.txt (schemathesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "browser"))
import webui_testing as wt  # noqa: E402

from webui import create_app  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_notes")
    shutil.copytree(wt.DEMO / "notes", root / "notes")
    wt.index_folder(root / "notes", root / "data")
    app = create_app({"DATA_DIR": str(root / "data"), "TESTING": False,
                      "THUMBNAIL_DIR": str(root / "thumbs")})
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


def test_fuzzed_requests_get_no_server_error_and_only_documented_statuses(schema):
    failures: list[str] = []
    statuses: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    for operation, mode in [(op, mode) for op in operations for mode in GenerationMode]:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            try:
                response = case.call_and_validate(checks=CHECKS)
                statuses.setdefault(operation.label, set()).add(response.status_code)
            except AssertionError as exc:  # schemathesis' failure groups are AssertionErrors
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:600]}")

        try:
            run()
        except Unsatisfiable:  # negative mode on an operation without parameters: nothing to make invalid
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, "\n\n".join(failures[:5])
    assert len(statuses) == len(operations) and 400 in statuses["POST /api/search"], statuses
    assert statuses["GET /api/health"] == {200}, statuses

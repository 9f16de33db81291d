"""CI run of bench/crash.py: three kill -9 rounds (add on SQLite, first migration on Postgres, rebuild --tokens
on SQLite), each resumed and compared with a clean run (issue 13)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import PG_ADMIN_URL, REPO


def test_three_crash_rounds_end_like_a_clean_run():
    proc = subprocess.run([sys.executable, "bench/crash.py", "--rounds", "3", "--seed", "0", "--notes", "6",
                           "--pg-url", PG_ADMIN_URL], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(r["scenario"], r["backend"]) for r in result["rounds"]] == [
        ("add", "sqlite"), ("migration", "postgres"), ("rebuild-tokens", "sqlite")]
    assert result["ok"], [r for r in result["rounds"] if not r["ok"]]
    assert result["killed"] >= 2, result  # the kills really hit running processes

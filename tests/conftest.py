"""Shared fixtures: repo paths, a CLI runner, a real Postgres database, a tiny OpenCLIP model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def run_cli(module: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` from the repo root, as a user would."""
    full_env = {**os.environ, **(env or {})}  # DATABASE_URL only when a test passes it (see the fixture below)
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_json(module: str, *args: str, env: dict | None = None) -> dict:
    proc = run_cli(module, *args, "--json", env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _no_ambient_database_url(monkeypatch):
    """Tests choose their database explicitly."""
    monkeypatch.delenv("DATABASE_URL", raising=False)


def new_pg_database(prefix: str) -> tuple[str, Callable[[], None]]:
    """A fresh database on the real Postgres server: (SQLAlchemy URL, drop). Fails, never skips, when
    the server is down."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"Postgres is not reachable at {PG_ADMIN_URL} ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}", drop


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A fresh database on the real Postgres server, dropped afterwards. Never skipped."""
    url, drop = new_pg_database("retrieval_test")
    yield url
    drop()


@pytest.fixture(scope="session")
def tiny_openclip(tmp_path_factory) -> Path:
    """A small randomly initialised open_clip model saved in open_clip's local folder layout."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny_openclip")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"size": 32, "mean": [0.481, 0.458, 0.408], "std": [0.269, 0.261, 0.276]},
    }))
    return folder

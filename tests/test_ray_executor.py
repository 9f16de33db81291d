"""`indexer add --executor ray` on a real local Ray cluster (`ray start --head` on 127.0.0.1).

The same small archive (demo photos, notes, speech, generated notes, one broken PNG) is indexed by the
local executor and by the Ray executor; both must end with the same files, errors, items, transcripts
and vectors (and token features), their FAISS indices agreeing with their databases. A Ray worker killed
in the middle of a run (SIGKILL of its process) is restarted and its batches re-run: same result. Ray
missing or an address that does not answer fail fast with the fix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, REPO, new_pg_database, run_cli
from indexer import repository as repo
from indexer.catalog import Catalog
from indexer.token_sync import missing_tokens

RAY_BIN = Path(sys.executable).parent / "ray"
BATCH = "2"  # small batches: many of them, so a worker can be killed mid-run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], temp: str, name: str, env: dict) -> subprocess.Popen:
    log = open(Path(temp) / f"{name}.log", "w")
    return subprocess.Popen([str(RAY_BIN), "start", *args, "--disable-usage-stats", "--block"], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_for(proc: subprocess.Popen, temp: str, name: str, ready, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        log = (Path(temp) / f"{name}.log").read_text()
        if proc.poll() is not None:
            pytest.fail(f"`ray start` ({name}) exited ({proc.returncode}):\n{log[-3000:]}")
        if time.time() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s:\n{log[-3000:]}")
        time.sleep(0.5)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_cluster():
    """Two Ray nodes on this machine, one CPU each: the head (where the indexer's driver attaches) and a
    second node started with `ray start --address` as on another machine, so one worker runs beside the
    writer and one on "another node". Each `ray start --block` runs in its own process session, stopped by
    signalling that session only (never `ray stop`, which stops every Ray on the machine)."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | _ray_env()
    procs = [_start(["--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard=false",
                     "--temp-dir", temp], temp, "head", env)]
    try:
        _wait_for(procs[0], temp, "head", lambda: _port_open(port), "the Ray head did not open its port")
        procs.append(_start(["--address", f"127.0.0.1:{port}", "--num-cpus", "1"], temp, "node2",
                            env))  # the same token: a node without it is refused
        _wait_for(procs[1], temp, "node2", lambda: "Ray runtime started" in (Path(temp) / "node2.log").read_text(),
                  "the second Ray node did not join")
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray_archive")
    demo = REPO / "demo"
    (root / "images").mkdir()
    for p in sorted((demo / "images").iterdir())[:6]:
        shutil.copy(p, root / "images" / p.name)
    shutil.copytree(demo / "notes", root / "notes")
    for i in range(3):
        (root / "notes" / f"generated_{i}.txt").write_text(f"Note {i}: a list of things to pack for trip number {i}.")
    (root / "speech").mkdir()
    for name in ("a-bicycle.wav",):
        shutil.copy(demo / "speech" / name, root / "speech" / name)
    shutil.copy(FIXTURES / "corrupt" / "truncated.png", root / "images" / "truncated.png")
    return root


def _snapshot(data_dir: Path, database_url: str | None = None) -> dict:
    """Files with their errors, items by (path, start) with kind, text, extra and vector, token-feature ids."""
    catalog = Catalog(data_dir, database_url=database_url)
    try:
        indices = catalog.fresh_indices()
        items, ids_by_modality = {}, {}
        with catalog.session() as s:
            for modality in ("image", "audio", "text"):
                db_ids = []
                for ids, vecs in repo.iter_embeddings(s, modality):
                    meta = repo.item_hits(s, ids.tolist())
                    for iid, vec in zip(ids.tolist(), vecs):
                        m = meta[iid]
                        items[(m["path"], m["start"])] = (modality, m["end"], m["content"], m["extra"], vec)
                        db_ids.append(iid)
                if db_ids:
                    assert sorted(indices[modality].ids().tolist()) == sorted(db_ids), f"{modality}: index != database"
                ids_by_modality[modality] = len(db_ids)
            errors = repo.file_errors(s)
            files = sorted(repo.known_files_under(s, ["/"]))
        assert missing_tokens(catalog) in (0, None)
        return {"items": items, "errors": errors, "files": files, "counts": ids_by_modality,
                "tokens": len(catalog.token_store().ids())}
    finally:
        catalog.close()


def _assert_same(a: dict, b: dict) -> None:
    assert a["files"] == b["files"]
    assert a["errors"] == b["errors"]
    assert a["counts"] == b["counts"] and a["tokens"] == b["tokens"]
    assert set(a["items"]) == set(b["items"])
    for key, (modality, end, content, extra, vec) in a["items"].items():
        other = b["items"][key]
        assert (modality, end, content, extra) == other[:4], key
        np.testing.assert_allclose(vec, other[4], atol=1e-5, err_msg=str(key))


@pytest.fixture(scope="module")
def local_run(archive, tmp_path_factory) -> tuple[dict, dict]:
    data = tmp_path_factory.mktemp("ray_cmp") / "local"
    proc = run_cli("indexer", "add", str(archive), "--data-dir", str(data), "--json", "--quiet")
    return json.loads(proc.stdout.strip().splitlines()[-1]), _snapshot(data)


# The test cluster checks a token, as the README's real cluster does; whether `ray start` would on its own
# depends on a ~/.ray/auth_token the machine may or may not have, so the token is this run's, in the env.
RAY_TOKEN = secrets.token_hex(32)


def _ray_env(extra: dict | None = None) -> dict:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN, **(extra or {})}


def test_ray_run_equals_local_run(archive, local_run, ray_cluster, tmp_path):
    summary, expected = local_run
    assert summary["added"] == 14 and summary["errors"] == 1
    data = tmp_path / "ray"
    proc = run_cli("indexer", "add", str(archive), "--data-dir", str(data), "--json", "--quiet",
                   "--executor", "ray", "--address", ray_cluster, "--batch-size", BATCH, "--workers", "2", env=_ray_env())
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k: out[k] for k in ("added", "updated", "unchanged", "removed", "errors")} == \
        {k: summary[k] for k in ("added", "updated", "unchanged", "removed", "errors")}
    assert out["timings"]["ray_workers"] == 2 and out["timings"]["ray_restarts"] == 0
    line = re.search(r"ray: 2 worker\(s\) (.*)", proc.stderr).group(1)
    workers, driver = re.findall(r"\(node (\w+)\)", line)[:2], re.search(r"writing here \(node (\w+)\)", line).group(1)
    assert len(set(workers)) == 2 and driver in workers, f"one worker beside the writer, one on the other node: {line}"
    _assert_same(expected, _snapshot(data))

    again = json.loads(run_cli("indexer", "add", str(archive), "--data-dir", str(data), "--json", "--quiet",
                               "--executor", "ray", "--address", ray_cluster, env=_ray_env()).stdout.splitlines()[-1])
    assert again["unchanged"] == 15 and again["added"] == again["updated"] == 0


def test_killed_worker_is_retried(archive, local_run, ray_cluster, tmp_path):
    """SIGKILL one worker process while batches are running: Ray restarts it and re-runs its batches; the run
    (catalog on Postgres, as for several machines) ends exactly like the local one."""
    from sqlalchemy import create_engine, text

    _, expected = local_run
    url, drop = new_pg_database("ray_test")
    engine = create_engine(url)
    data, err_path = tmp_path / "ray-pg", tmp_path / "stderr.txt"
    try:
        with open(err_path, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "indexer", "add", str(archive), "--data-dir", str(data), "--json", "--quiet",
                 "--executor", "ray", "--address", ray_cluster, "--batch-size", BATCH, "--workers", "2"],
                cwd=REPO, env={**os.environ, **_ray_env({"DATABASE_URL": url})}, stdout=subprocess.PIPE, stderr=err,
                text=True)
            pids, written, deadline = None, 0, time.time() + 240
            while proc.poll() is None and time.time() < deadline:
                if pids is None:
                    m = re.search(r"ray: \d+ worker\(s\) (.*)", err_path.read_text())
                    pids = [int(p) for p in re.findall(r"pid (\d+)", m.group(1))] if m else None
                else:
                    try:
                        with engine.connect() as c:
                            written = c.execute(text("SELECT count(*) FROM files WHERE status = 'ok'")).scalar()
                    except Exception:  # tables not created yet
                        written = 0
                    if written >= 2:  # the first batch is committed; both workers hold more
                        os.kill(pids[0], signal.SIGKILL)
                        break
                time.sleep(0.1)
            assert proc.poll() is None, f"the run ended before a worker could be killed:\n{err_path.read_text()[-2000:]}"
            assert written < 14, "the kill came too late to hit a running batch"
            stdout, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, err_path.read_text()[-3000:]
        out = json.loads(stdout.strip().splitlines()[-1])
        assert out["added"] == 14 and out["errors"] == 1
        assert out["timings"]["ray_restarts"] >= 1, "the killed worker was not restarted"
        _assert_same(expected, _snapshot(data, database_url=url))
    finally:
        engine.dispose()
        drop()


def test_unreachable_address_fails_fast(archive, tmp_path):
    data = tmp_path / "never"
    t = time.perf_counter()
    proc = run_cli("indexer", "add", str(archive), "--data-dir", str(data), "--executor", "ray",
                   "--address", f"127.0.0.1:{_free_port()}", check=False)
    assert proc.returncode == 2 and time.perf_counter() - t < 60
    assert "no Ray cluster answers at 127.0.0.1:" in proc.stderr and "ray start --head" in proc.stderr
    assert not data.exists(), "a failed connection must not leave a catalog behind"

    proc = run_cli("indexer", "add", str(archive), "--data-dir", str(data), "--address", "127.0.0.1:6379", check=False)
    assert proc.returncode == 2 and "--address is for --executor ray" in proc.stderr


def test_missing_ray_names_the_fix(archive, tmp_path):
    """Where `ray` cannot be imported (blocked the way Python documents: a None entry in sys.modules)."""
    code = ("import sys; sys.modules['ray'] = None; from indexer.cli import main; "
            f"sys.exit(main(['add', {str(archive)!r}, '--data-dir', {str(tmp_path / 'd')!r}, '--executor', 'ray']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "needs the `ray` package" in proc.stderr and "pip install 'ray==" in proc.stderr


def test_worker_plan_asks_for_gpus_only_where_the_cluster_has_them():
    from indexer.ray_executor import plan_workers

    assert plan_workers({"CPU": 16.0, "GPU": 2.0}, None) == (2, {"num_cpus": 8, "num_gpus": 1})
    assert plan_workers({"CPU": 64.0, "GPU": 1.0}, 2) == (2, {"num_cpus": 8, "num_gpus": 1})
    assert plan_workers({"CPU": 6.0}, None) == (6, {"num_cpus": 1})
    assert plan_workers({"CPU": 6.0}, 3) == (3, {"num_cpus": 1})

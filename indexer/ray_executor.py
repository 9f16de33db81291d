"""The Ray executor: decode + embed on a Ray cluster, write on this machine.

``python -m indexer add PATH --executor ray [--address ADDR]`` runs the same pipeline as the local
executor (:mod:`indexer.pipeline`) with the mapper moved onto Ray actors:

* the driver (this process) scans, compares with the catalog and owns the :class:`~indexer.writer.Writer`:
  workers never open the catalog, so the one-writer contract and its crash safety are unchanged (use a
  Postgres ``DATABASE_URL`` when other machines must read the catalog, see the README);
* each :class:`EmbedWorker` actor creates the model once (``create_model``; towers load on first use) and
  turns a batch of file *paths* into :class:`~indexer.writer.Decoded` values with their vectors, transcripts
  and token views, the payloads (pixels, samples) dropped before they travel back. Workers read the files
  themselves: every indexed path must be visible at the same place on every node (a shared filesystem);
* batches are handed to the least-busy actor, at most ``IN_FLIGHT`` per actor, and written in submission
  order, so a fresh data directory gets the same items, ids and vectors as a local run;
* a worker process that dies (killed, out of memory, node lost) is restarted by Ray (``max_restarts=-1``)
  and its batch re-run (``max_task_retries``); a batch that still fails is re-run file by file, and a
  file that kills its worker every time is recorded as that file's error, never a run error;
* actors ask for one GPU each (and up to 8 CPUs to decode with) when the cluster has GPUs, the encoders
  then running on CUDA; else one CPU each.

Ray Data's ``map_batches`` with an actor pool has the same shape (a callable class that loads the model
once); plain actors are used here because the payloads are Python objects rather than Arrow columns, the
writer needs results in order with bounded look-ahead, and the ``ray`` wheel alone is enough.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Sequence

from .writer import Decoded, Summary, Writer

if TYPE_CHECKING:
    from retrieval.encoders import Model

    from .pipeline import AddOptions

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # batches queued per actor: one running, one waiting (hides the round trip)
TASK_RETRIES = 3  # re-runs of a batch whose worker died
STARTUP_TIMEOUT_S = float(os.environ.get("INDEXER_RAY_STARTUP_TIMEOUT_S", 180))
NAMESPACE = "indexer"
_PIN = "ray==2.60.0"


class RayExecutorError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or its workers cannot run the model."""


# ---------------------------------------------------------------- connecting
def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RayExecutorError(
            f"--executor ray needs the `ray` package ({exc}); install it with `pip install '{_PIN}'` "
            f"(pinned in requirements.txt), or index with --executor local"
        ) from None
    return ray


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes, when ``host:port`` does not answer (``ray.init`` retries for long)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayExecutorError(f"--address {address!r} is not HOST:PORT (or ray://HOST:PORT, or auto); pass the "
                               f"address `ray start --head` printed, e.g. --address 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayExecutorError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one there with "
            f"`ray start --head --port {port}`, check the address and firewall, or leave out --address to "
            f"run a local Ray instance"
        ) from None


def connect(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Connect to the cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local Ray instance with
    ``num_cpus`` CPUs when neither is given; returns the cluster's resources. Raises
    :class:`RayExecutorError` with the fix when Ray is missing or the address does not answer."""
    ray = _import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return dict(ray.cluster_resources())
    if address:
        _probe(address)
    # the workers import this checkout: the driver's sys.path travels with the job (same paths on every node);
    # worker output stays in the nodes' Ray logs: stdout carries the --json summary only
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, namespace=NAMESPACE,
                                  log_to_driver=False)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "locally"
        auth = ("" if not address or os.environ.get("RAY_AUTH_MODE") else
                "; a cluster started by `ray start` checks a token by default: export RAY_AUTH_MODE=token here, with "
                "the head node's ~/.ray/auth_token copied to this machine (or in $RAY_AUTH_TOKEN)")
        raise RayExecutorError(f"could not connect to Ray {where}: {str(exc).strip()}{auth}; check `ray status` on "
                               f"the head node, or run with --executor local") from None
    return dict(ray.cluster_resources())


def disconnect() -> None:
    """Leave the cluster (a local Ray instance started by :func:`connect` stops)."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


def plan_workers(resources: dict[str, float], requested: int | None) -> tuple[int, dict[str, float]]:
    """(number of actors, resources per actor): one per GPU when the cluster has GPUs, else one per CPU;
    ``requested`` (``--workers``) overrides the count."""
    gpus = int(resources.get("GPU", 0))
    if gpus > 0:  # a GPU actor decodes with several threads so that the GPU is not left waiting
        cpus = max(1, min(8, int(resources.get("CPU", 1)) // gpus))
        return (requested or gpus), {"num_cpus": cpus, "num_gpus": 1}
    return (requested or max(1, int(resources.get("CPU", 1)))), {"num_cpus": 1}


# ---------------------------------------------------------------- worker
class EmbedWorker:
    """One Ray actor: the model, created once, and the decode + encode of batches of files."""

    def __init__(self, model_name: str, driver_node: str) -> None:
        from retrieval.encoders import create_model

        self.model = create_model(model_name)
        self.driver_node = driver_node

    def ready(self, roots: Sequence[str]) -> dict[str, Any]:
        """Where this worker runs, its weights' checksums, and which roots it cannot see."""
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                "checksums": self.model.checksums, "missing": [r for r in roots if not os.path.exists(r)]}

    def process(self, todo: list[tuple[Any, Any]]) -> dict[str, Any]:
        """Decode and encode ``todo`` ([(Candidate, KnownFile | None)]); payloads are dropped from the result."""
        import ray

        from .pipeline import decode_file, encode_units

        local = ray.get_runtime_context().get_node_id() == self.driver_node
        t = time.perf_counter()
        threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))

        def one(item: tuple[Any, Any]) -> Decoded:
            c, k = item
            # another node sees the shared filesystem under its own st_dev: check identity only where it was scanned
            d = decode_file(c if local else dataclasses.replace(c, dev=None, ino=None), k, self.model)
            d.candidate = c
            return d

        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                batch = list(pool.map(one, todo))
        else:
            batch = [one(item) for item in todo]
        decode_s = time.perf_counter() - t
        t = time.perf_counter()
        encode_units(self.model, batch)
        encode_s = time.perf_counter() - t
        for d in batch:
            for u in d.units:
                u.payload = None
        return {"batch": batch, "pid": os.getpid(), "decode_s": decode_s, "encode_s": encode_s}


def _actor_class(ray):
    """The Ray actor class over :class:`EmbedWorker` (made here: the module imports without Ray)."""
    return ray.remote(max_restarts=-1, max_task_retries=TASK_RETRIES)(EmbedWorker)


def start_workers(model: "Model", roots: Sequence[str], requested: int | None, n_batches: int) -> tuple[list, list[int]]:
    """Create the actors (named ``embed-<pid>-<i>`` in namespace ``indexer``) and wait until each has the model;
    raises :class:`RayExecutorError` when they cannot start, see other weights, or miss a root. Returns the actors
    and the pid each one started in (a batch answered from another pid means Ray restarted that worker)."""
    ray = _import_ray()
    n, resources = plan_workers(dict(ray.cluster_resources()), requested)
    n = max(1, min(n, n_batches))
    cls = _actor_class(ray)
    driver_node = ray.get_runtime_context().get_node_id()
    env = {"OPENBLAS_NUM_THREADS": str(blas_threads())}
    actors = [cls.options(name=f"embed-{os.getpid()}-{i}", runtime_env={"env_vars": env}, **resources)
              .remote(model.name, driver_node) for i in range(n)]
    refs = [a.ready.remote(list(roots)) for a in actors]
    done, pending = ray.wait(refs, num_returns=len(refs), timeout=STARTUP_TIMEOUT_S)
    if pending:
        _stop(actors)
        raise RayExecutorError(
            f"{len(pending)} of {n} Ray workers did not start within {STARTUP_TIMEOUT_S:.0f} s (each asks for "
            f"{resources}; the cluster has {dict(ray.cluster_resources())}); pass a smaller --workers, add nodes, "
            f"or raise INDEXER_RAY_STARTUP_TIMEOUT_S")
    try:
        infos = ray.get(done)
    except Exception as exc:
        _stop(actors)
        raise RayExecutorError(f"a Ray worker could not load model '{model.name}': {_cause(exc)}") from None
    for info in infos:
        where = f"node {info['host']} ({info['node'][:8]})"
        if info["missing"]:
            _stop(actors)
            raise RayExecutorError(
                f"{where} cannot see {', '.join(info['missing'])}: the Ray executor reads files where they are, so "
                f"mount the archive at the same path on every node (NFS, CephFS, ...), or use --executor local")
        if info["checksums"] != model.checksums:
            _stop(actors)
            raise RayExecutorError(f"{where} has other weights for model '{model.name}' than this machine; install "
                                   f"the same checkout and model files on every node")
    print(f"ray: {n} worker(s) " + ", ".join(f"pid {i['pid']} on {i['host']} (node {i['node'][:8]})" for i in infos)
          + f"; writing here (node {driver_node[:8]})", file=sys.stderr)
    return actors, [int(info["pid"]) for info in ray.get(refs)]  # in the actors' order (ray.wait's may differ)


def blas_threads() -> int:
    """The BLAS thread count of a local run here (numpy's OpenBLAS defaults to one thread per core).

    Speech vectors depend on it: Whisper's log-mel features (numpy matmul) differ in the last bits between
    1 and 2 OpenBLAS threads, and the int8 encoder amplifies that to up to 0.05 on the demo clips. Ray starts
    actors with ``OMP_NUM_THREADS`` = their CPUs (1), so they get this machine's count instead, and a Ray run
    equals a local run on the driver machine."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def _stop(actors: list) -> None:
    ray = _import_ray()
    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except Exception:
            pass


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1][:300]}" if text else type(cause).__name__


# ---------------------------------------------------------------- driver
def process(todo: list, model: "Model", writer: Writer, summary: Summary, options: "AddOptions",
            roots: Sequence[str]) -> None:
    """Decode + encode ``todo`` ([(Candidate, KnownFile | None)]) on Ray actors and write each batch, in order,
    through ``writer`` (this process is the only one that touches the catalog)."""
    if not todo:
        return
    ray = _import_ray()
    from tqdm import tqdm

    connect(options.address)
    t = time.perf_counter()
    batches = [todo[i:i + options.batch_size] for i in range(0, len(todo), options.batch_size)]
    actors, started_pids = start_workers(model, roots, options.ray_workers, len(batches))
    summary.timings["ray_start_s"] = time.perf_counter() - t
    summary.timings["ray_workers"] = len(actors)
    bar = tqdm(total=len(todo), unit="file", desc="indexing (ray)", disable=not options.progress,
               file=sys.stderr, dynamic_ncols=True)
    load = [0] * len(actors)
    # seeded with each actor's first pid: a worker killed before it answered any batch still counts as restarted
    pids: list[set[int]] = [{pid} for pid in started_pids]
    window: deque = deque()  # (ref, actor index, batch), in submission = write order
    it = iter(batches)
    failures = [0]  # consecutive files whose worker died every time

    def fill() -> None:
        while len(window) < IN_FLIGHT * len(actors):
            batch = next(it, None)
            if batch is None:
                return
            i = min(range(len(actors)), key=load.__getitem__)
            window.append((actors[i].process.remote(batch), i, batch))
            load[i] += 1

    last_save = time.perf_counter()
    try:
        fill()
        while window:
            ref, i, batch = window.popleft()
            t = time.perf_counter()
            try:
                outs = [ray.get(ref)]
            except ray.exceptions.RayError as exc:
                log.warning("a batch failed on its Ray worker after %d retries (%s); re-running it file by file",
                            TASK_RETRIES, _cause(exc))
                outs = _one_by_one(ray, actors[i], batch, failures)
            load[i] -= 1
            summary.timings["ray_wait_s"] += time.perf_counter() - t
            fill()  # keep the workers busy while this batch is written
            decoded: list[Decoded] = []
            for out in outs:
                decoded += out["batch"]
                if out["pid"]:
                    pids[i].add(out["pid"])
                summary.timings["decode_s"] += out["decode_s"]
                summary.timings["encode_s"] += out["encode_s"]
            for d, (c, k) in zip(decoded, batch):
                d.candidate, d.known = c, k  # the driver's own objects
            t = time.perf_counter()
            writer.write(decoded, summary)
            summary.timings["write_s"] += time.perf_counter() - t
            bar.update(len(batch))
            bar.set_postfix(errors=summary.errors, refresh=False)
            if time.perf_counter() - last_save > options.save_every_s:
                t = time.perf_counter()
                writer.save()
                summary.timings["index_save_s"] += time.perf_counter() - t
                last_save = time.perf_counter()
    finally:
        bar.close()
        _stop(actors)
    restarts = sum(max(0, len(p) - 1) for p in pids)
    summary.timings["ray_restarts"] = restarts
    if restarts:
        print(f"ray: {restarts} worker restart(s); their batches were re-run", file=sys.stderr)


def _one_by_one(ray, actor, batch: list, failures: list[int]) -> list[dict[str, Any]]:
    """Re-run a failed batch one file at a time; a file whose worker dies every time becomes that file's error.
    Three such files in a row mean the workers cannot run at all: the run stops (nothing half-written)."""
    outs = []
    for c, k in batch:
        try:
            outs.append(ray.get(actor.process.options(max_task_retries=1).remote([(c, k)])))
            failures[0] = 0
        except ray.exceptions.RayError as exc:
            failures[0] += 1
            if failures[0] >= 3:
                raise RayExecutorError(f"Ray workers keep failing ({_cause(exc)}); see the worker logs under "
                                       f"/tmp/ray/session_latest/logs on their nodes, or use --executor local") from None
            err = (f"{c.path}: the Ray worker processing it died every time ({_cause(exc)}); the file probably "
                   f"crashes its decoder or exhausts the worker's memory: check it opens in its usual program, "
                   f"re-save it, or index it with --executor local to see the error")
            outs.append({"batch": [Decoded(c, k, error=err)], "pid": 0, "decode_s": 0.0, "encode_s": 0.0})
    return outs

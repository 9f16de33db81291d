"""Mixed load on the real web server: do slow queries (speech, image uploads) starve typed ones?

Starts `python -m webui` (2 workers x 4 threads unless told otherwise) on the demo archive
indexed into a temporary folder (or --data-dir / --url), then runs two bounded scenarios,
each for --seconds from concurrent keep-alive clients:

- ``mixed``: --clients clients (default 32), 60% text / 20% image upload / 20% audio upload;
- ``audio_pressure``: --audio-clients audio clients (default 8) hammering, plus 4 text clients.

Every query is distinct (no cache hits): text a new sentence, audio and image uploads the
demo's clips and pictures with a few random bytes appended (same content, new upload key). Prints one JSON object: per scenario and kind the count, the
200s, the 503s (busy, with Retry-After) and other errors, p50/p99 of answered requests.
Exits 1 when a request failed with anything but 200 or 503.

    .venv/bin/python bench/mixed_load.py
    .venv/bin/python bench/mixed_load.py --seconds 10 --clients 16
    .venv/bin/python bench/mixed_load.py --slow-nice 0,10   # side by side: one server per SLOW_NICE value

With ``--slow-nice`` the scenarios run once per value against a fresh server started with
``WEBUI_SLOW_NICE`` set (0 = slow queries share the cores evenly with typed ones), in one run, and
the JSON has one block per value plus the text p99 ratios.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_webui import REPO, percentile, sentences, start_server  # noqa: E402

DEMO = REPO / "demo"


def multipart(name: str, data: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = []
    for key, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
               "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def endless_sentences():
    """Distinct sentences without end: the bench's list, then again with a round number."""
    for n in itertools.count():
        for sentence in sentences():
            yield sentence if n == 0 else f"{sentence}, take {n}"


class Requests:
    """Request bodies per kind, handed out round-robin (text: a fresh sentence each time)."""

    def __init__(self) -> None:
        self.text = endless_sentences()
        self.audio = [(p.name, p.read_bytes()) for p in sorted((DEMO / "speech").glob("*.wav"))]
        self.images = [(p.name, p.read_bytes()) for p in sorted((DEMO / "images").glob("*.png"))]
        self.n = 0
        self.lock = threading.Lock()

    def body(self, kind: str) -> tuple[bytes, str]:
        with self.lock:
            self.n += 1
            if kind == "text":
                return json.dumps({"text": next(self.text), "k": 10}).encode(), "application/json"
            files = self.audio if kind == "audio" else self.images
            name, data = files[self.n % len(files)]
        # trailing bytes after the WAV data / PNG IEND: decoded the same, but a new upload key, so the
        # server's query-vector cache cannot answer it (Whisper and the image tower run every time)
        return multipart(name, data + uuid.uuid4().bytes, {"k": "10", "target": "all"})


def scenario(url: str, kinds: list[str], seconds: float, reqs: Requests) -> dict:
    parts = urlsplit(url)
    lock = threading.Lock()
    stats: dict[str, dict] = {k: {"lat": [], "ok": 0, "busy": 0, "errors": []} for k in set(kinds)}
    deadline = time.monotonic() + seconds
    gate = threading.Barrier(len(kinds) + 1)

    def client(kind: str) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        gate.wait()
        while time.monotonic() < deadline:
            body, ctype = reqs.body(kind)
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/search", body=body, headers={"Content-Type": ctype})
                resp = conn.getresponse()
                data = resp.read()
                status, retry = resp.status, resp.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as exc:
                status, retry, data = 0, None, repr(exc).encode()
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                s = stats[kind]
                if status == 200:
                    s["ok"] += 1
                    s["lat"].append(elapsed)
                elif status == 503 and retry:
                    s["busy"] += 1
                else:
                    s["errors"].append(f"{status}: {data[:150]!r}")
            if status == 503 and retry:
                time.sleep(min(float(retry), 1.0))  # a polite client backs off
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in kinds]
    for t in threads:
        t.start()
    gate.wait()
    for t in threads:
        t.join()
    out = {}
    for kind, s in sorted(stats.items()):
        out[kind] = {"clients": kinds.count(kind), "ok": s["ok"], "busy_503": s["busy"], "errors": len(s["errors"]),
                     "p50_ms": round(percentile(s["lat"], 0.5), 1), "p99_ms": round(percentile(s["lat"], 0.99), 1),
                     "error_samples": s["errors"][:3]}
    return out


def both_scenarios(url: str, args: argparse.Namespace) -> dict:
    """Warm-up (every worker loads its towers), then ``mixed`` (60/20/20) and ``audio_pressure``."""
    reqs = Requests()
    scenario(url, ["audio", "image", "text", "text"] * args.workers, 4, reqs)
    n = args.clients
    mixed = ["text"] * round(n * 0.6) + ["image"] * round(n * 0.2)
    mixed += ["audio"] * (n - len(mixed))
    return {"mixed": scenario(url, mixed, args.seconds, reqs),
            "audio_pressure": scenario(url, ["audio"] * args.audio_clients + ["text"] * 4, args.seconds, reqs)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="an indexed data directory (default: index demo/)")
    p.add_argument("--url", help="use this running server instead of starting one")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--clients", type=int, default=32, help="clients of the mixed scenario (default 32)")
    p.add_argument("--audio-clients", type=int, default=8, help="audio clients of the pressure scenario (default 8)")
    p.add_argument("--seconds", type=float, default=20, help="length of each scenario (default 20)")
    p.add_argument("--slow-nice", help="comma-separated SLOW_NICE values to compare, one server each (e.g. 0,10)")
    args = p.parse_args()
    if args.slow_nice:
        if args.url:
            p.error("--slow-nice starts its own servers; it cannot use --url")
        return compare_nice(args, [int(v) for v in args.slow_nice.split(",")])

    tmp = Path(tempfile.mkdtemp(prefix="mixed_load_"))
    proc = None
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            data_dir = args.data_dir
            if data_dir is None:
                import subprocess

                data_dir = tmp / "data"
                subprocess.run([sys.executable, "-m", "indexer", "add", str(DEMO), "--data-dir", str(data_dir),
                                "--json"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            proc, url = start_server(data_dir.resolve(), args.workers, args.threads, tmp / "server.log")
        result = {
            "benchmark": "POST /api/search under mixed load (text JSON, image and audio multipart uploads)",
            "server": None if args.url else f"python -m webui --workers {args.workers} --threads {args.threads}",
            "seconds_per_scenario": args.seconds,
            **both_scenarios(url, args),
        }
        print(json.dumps(result, indent=1))
        failed = sum(k["errors"] for sc in ("mixed", "audio_pressure") for k in result[sc].values())
        return 1 if failed else 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)


def compare_nice(args: argparse.Namespace, values: list[int]) -> int:
    """Both scenarios against one fresh server per SLOW_NICE value, on the same data, in one run."""
    import os
    import subprocess

    tmp = Path(tempfile.mkdtemp(prefix="mixed_load_"))
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = tmp / "data"
        subprocess.run([sys.executable, "-m", "indexer", "add", str(DEMO), "--data-dir", str(data_dir), "--json"],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    result: dict = {"benchmark": "POST /api/search under mixed load, per SLOW_NICE (webui.slow)",
                    "server": f"python -m webui --workers {args.workers} --threads {args.threads}",
                    "seconds_per_scenario": args.seconds, "by_slow_nice": {}}
    failed = 0
    for value in values:
        os.environ["WEBUI_SLOW_NICE"] = str(value)
        proc, url = start_server(data_dir.resolve(), args.workers, args.threads, tmp / f"server-{value}.log")
        try:
            block = both_scenarios(url, args)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        result["by_slow_nice"][str(value)] = block
        failed += sum(k["errors"] for sc in block.values() for k in sc.values())
    base = result["by_slow_nice"][str(values[0])]
    result["text_p99_ratio_vs_first"] = {
        str(v): {sc: round(result["by_slow_nice"][str(v)][sc]["text"]["p99_ms"] / max(base[sc]["text"]["p99_ms"], 1e-9),
                           3) for sc in ("mixed", "audio_pressure")} for v in values}
    print(json.dumps(result, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

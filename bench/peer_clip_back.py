"""The peer, clip-retrieval 2.45.0's ``clip back``, on the same vectors as our server (run by bench/serve_scale.py).

Runs **inside the peer's own venv** (``~/.cache/retrieval-bench/clip-retrieval-2.45.0``, made by
``serve_scale.py`` with ``pip install clip-retrieval==2.45.0``; never in requirements.txt), never in ours:

    prepare EMB.npy CAPTIONS.txt PEER_DIR   metadata as Arrow IPC (clip back's fastest provider, ``use_arrow``)
                                            + the index its own builder makes: ``clip-retrieval index``
                                            (autofaiss, default memory budget 4G), row i = our i-th vector
    serve PEER_DIR PORT                      ``clip_back(...)`` as its CLI runs it (Flask/Werkzeug, threaded),
                                            index memory-mapped, Arrow metadata

Offline, one thing is changed: the CLIP model ``clip back`` loads at start (downloaded from the internet,
which this machine cannot reach) is replaced by an open_clip ViT-B-32 with random weights. The benchmark sends
every query as ``embedding_input``, so the model is never on the timed path; the aesthetic, safety and
multilingual models (downloads too) are off.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def prepare(emb: str, captions: str, out: str) -> None:
    import numpy as np
    import pyarrow as pa

    from clip_retrieval.clip_index import clip_index

    import shutil

    root = Path(out)
    shutil.rmtree(root / "index", ignore_errors=True)  # clip_index copies the metadata folder: it must not exist
    (root / "emb" / "text_emb").mkdir(parents=True, exist_ok=True)
    (root / "emb" / "metadata").mkdir(parents=True, exist_ok=True)
    vectors = np.load(emb, mmap_mode="r")
    np.save(root / "emb" / "text_emb" / "text_emb_0.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    lines = Path(captions).read_text().splitlines()
    if len(lines) != len(vectors):
        raise SystemExit(f"{len(lines)} captions for {len(vectors)} vectors")
    table = pa.table({"caption": [c.split("\t", 1)[1] for c in lines], "url": [c.split("\t", 1)[0] for c in lines]})
    with pa.ipc.new_file(str(root / "emb" / "metadata" / "metadata_0.arrow"), table.schema) as writer:
        writer.write_table(table)
    t = time.perf_counter()
    clip_index(str(root / "emb"), str(root / "index"), copy_metadata=True)
    (root / "index" / "prepare.json").write_text(json.dumps({"index_build_s": round(time.perf_counter() - t, 1)}))
    (root / "emb" / "text_emb" / "text_emb_0.npy").unlink()  # the index holds the vectors now


def serve(peer_dir: str, port: str) -> None:
    import all_clip
    import open_clip

    def offline_clip(clip_model: str = "ViT-B/32", use_jit: bool = True, warmup_batch_size: int = 1,
                     clip_cache_path: str | None = None, device: str | None = None):
        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
        return model.eval(), preprocess, open_clip.get_tokenizer("ViT-B-32")

    all_clip.load_clip = offline_clip  # clip_back imports it from all_clip when it loads an index
    from clip_retrieval.clip_back import clip_back

    name = Path(peer_dir).name
    indices = Path(peer_dir) / "indices_paths.json"
    indices.write_text(json.dumps({name: str(Path(peer_dir) / "index")}))
    clip_back(indices_paths=str(indices), port=int(port), enable_faiss_memory_mapping=True, use_arrow=True,
              columns_to_return=["url", "caption"], enable_mclip_option=False, use_jit=False,
              provide_safety_model=False, provide_violence_detector=False, provide_aesthetic_embeddings=False)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "prepare":
        prepare(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)

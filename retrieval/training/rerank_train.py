"""Train the cross-attention re-ranker on the bundled model's data (``train --stage rerank``).

The re-ranker must correct the first stage where it is weak: on concepts its
towers never saw. On the bundled towers' own training concepts the first stage
is nearly perfect (validation R@1 ~0.97), so features from them teach nothing
(measured: no gain). Hence cross-fitting: a *fold run* of the joint trainer
(``train --fold 0.3``) keeps 30% of the training concepts out; its towers embed
those concepts, which gives out-of-fold features in the same joint space (the
text tower is locked, so every tower maps into MiniLM's space). The re-ranker
trains on them (``--fold-run``); ~20% of the fold concepts are its validation.
The model's held-out concepts are never seen here. Without ``--fold-run`` the
bundled towers' own training concepts are used (in-fold; for comparison).

Each step takes text queries (captions) and speech queries (clips), each with its
concept's image as the positive and hard negatives drawn from the top of the
first-stage ranking (the image tower's embedding against the query's) over the
other concepts. An image gets a file-name view with some probability: usually
its own label (a user who named the file), sometimes another concept's (a
misleading name), so the view gate learns when to trust names. Loss:
cross-entropy of ``scale * (first + r)`` over the candidates (``r`` in cosine units). After each epoch the
validation concepts are ranked with and without re-ranking for a grid of weights;
per pair, the (memory, learned) weights with the best R@1 that keep R@10 are
exported; a pair whose R@1 rose by less than ``MIN_GAIN`` is not re-ranked at all. Features are
cached in the data folder (``rerank_features*.npz``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..rerank import CONFIG_FILE, MEMORY_FILE, WEIGHTS_FILE, CrossAttentionReranker, pad_tokens
from ..tokens import VIEW_TYPES
from .emoji_data import label_text
from .register import register_part

log = logging.getLogger(__name__)

PAIRS = ["text->image", "audio->image"]
T_TEXT, T_PIX, T_NAME, T_SOUND = (VIEW_TYPES.index(v) for v in ("text", "pixels", "name", "sound"))
HARD_POOL = 40
NEGATIVES = 15
NAME_OWN, NAME_OTHER = 0.3, 0.05
MEMORY_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
LEARNED_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_GAIN = 0.03  # a pair is re-ranked only when validation R@1 rose by at least this much


@dataclass
class RerankConfig:
    data: Path
    out: Path
    epochs: int = 8
    steps_per_epoch: int = 150
    batch: int = 48
    lr: float = 1e-3
    width: int = 128
    heads: int = 4
    seed: int = 0
    device: str = "auto"
    export: Path | None = None
    register: str = "triad-mini"
    val_fraction: float = 0.2
    fold_run: Path | None = None


class Features:
    """Padded float16 token tensors of images, captions, clips and concept names."""

    def __init__(self, data: Path, model_name: str, fold_run: Path | None = None) -> None:
        cache = data / (f"rerank_features_{fold_run.name}.npz" if fold_run else "rerank_features.npz")
        if cache.is_file():
            z = np.load(cache, allow_pickle=False)
            self.__dict__.update({k: z[k] for k in z.files})
        else:
            self.__dict__.update(_compute(data, model_name, fold_run))
            np.savez(cache, **self.__dict__)
        self.img_glob = torch.from_numpy(self.img_tok[:, 0].astype(np.float32))

    def tensor(self, name: str, rows: Any) -> tuple[torch.Tensor, torch.Tensor]:
        tok = torch.from_numpy(getattr(self, name + "_tok")[rows].astype(np.float32))
        lens = torch.from_numpy(getattr(self, name + "_len")[rows])
        valid = torch.arange(tok.shape[1])[None, :] < lens[:, None]
        return tok, valid


def _pack(mats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x, valid = pad_tokens(mats, mats[0].shape[1])
    return x.numpy().astype(np.float16), valid.sum(1).numpy().astype(np.int32)


def _compute(data: Path, model_name: str, fold_run: Path | None) -> dict[str, np.ndarray]:
    """Tokens of the training concepts by the bundled model; with ``fold_run``, tokens of that run's
    kept-out concepts by that run's own towers (which never saw them: out-of-fold features)."""
    from ..decoders import load_image
    from ..encoders import create_model

    model = create_model(model_name)
    concepts = json.loads((data / "concepts.json").read_text())
    image_tower, head = model.tower("image"), model.tower("audio").head
    keys = {c["key"] for c in concepts if c["split"] == "train"}
    if fold_run is not None:
        from ..encoders.image_cnn import CnnImage
        from ..encoders.speech_head import HeadSpeech

        export = fold_run / "export"
        arch = json.loads((export / "arch.json").read_text())
        image_tower = CnnImage(export / "image_cnn.safetensors", model.dim, arch["image"])
        head = HeadSpeech(export / "speech_head.safetensors", None, model.dim, arch["speech_head"])  # type: ignore[arg-type]
        keys = set(json.loads((fold_run / "fold.json").read_text()))
    train = [i for i, c in enumerate(concepts) if c["key"] in keys]
    img_rows, img_concept = [], []
    for i in train:
        for paths in concepts[i]["images"].values():
            img_rows += paths[:1]
            img_concept.append(i)
    img_tok = []
    for s in tqdm(range(0, len(img_rows), 256), desc="image tokens"):
        img_tok += image_tower.encode_tokens([load_image(data / p) for p in img_rows[s:s + 256]])
    texts, text_concept = [], []
    for i in train:
        for t in dict.fromkeys([label_text(concepts[i]["label"]), *concepts[i]["captions"]]):
            texts.append(t)
            text_concept.append(i)
    text_tok = []
    for s in tqdm(range(0, len(texts), 512), desc="caption tokens"):
        text_tok += model.encode_tokens("text", texts[s:s + 512])
    name_tok = model.encode_tokens("text", [label_text(concepts[i]["label"]) for i in train])
    meta = json.loads((data / "frames.json").read_text())
    frames = np.load(data / "frames.npy", mmap_mode="r")
    clips = {r["id"]: r for r in map(json.loads, (data / "clips.jsonl").read_text().splitlines()) if r}
    index = {c["key"]: i for i, c in enumerate(concepts)}
    sp_tok, sp_concept = [], []
    keep = [(cid, ab) for cid, ab in zip(meta["ids"], meta["offsets"])
            if clips[cid]["split"] in ("train", "val") and clips[cid]["concept"] in keys]
    for s in tqdm(range(0, len(keep), 128), desc="speech tokens"):
        group = keep[s:s + 128]
        sp_tok += head.tokens_from_frames([np.asarray(frames[a:b], np.float32) for _, (a, b) in group])
        sp_concept += [index[clips[cid]["concept"]] for cid, _ in group]
    known = [label_text(c["label"]) for c in concepts if c["split"] == "train" and c["key"] not in (keys if fold_run else ())]
    export_known = [label_text(c["label"]) for c in concepts if c["split"] == "train"]
    out: dict[str, np.ndarray] = {"memory": model.encode("text", known).astype(np.float16),
                                  "export_memory": model.encode("text", export_known).astype(np.float16),
                                  "img_concept": np.array(img_concept, np.int32), "text_concept": np.array(text_concept, np.int32),
                                  "sp_concept": np.array(sp_concept, np.int32), "name_concept": np.array(train, np.int32)}
    for name, mats in (("img", img_tok), ("text", text_tok), ("sp", sp_tok), ("name", name_tok)):
        out[name + "_tok"], out[name + "_len"] = _pack(mats)
    return out


class Trainer:
    def __init__(self, cfg: RerankConfig, feats: Features) -> None:
        self.cfg, self.f = cfg, feats
        rng = random.Random(cfg.seed)
        concepts = sorted(set(feats.img_concept.tolist()))
        self.val = set(rng.sample(concepts, max(1, int(len(concepts) * cfg.val_fraction))))
        self.name_row = {int(c): r for r, c in enumerate(feats.name_concept)}
        self.imgs_of: dict[int, list[int]] = {}
        for r, c in enumerate(feats.img_concept.tolist()):
            self.imgs_of.setdefault(c, []).append(r)
        self.train_imgs = np.array([r for r, c in enumerate(feats.img_concept) if int(c) not in self.val])
        self.queries = [("text", r) for r, c in enumerate(feats.text_concept) if int(c) not in self.val] + \
                       [("sp", r) for r, c in enumerate(feats.sp_concept) if int(c) not in self.val]
        self.hard = {kind: self._mine(kind) for kind in ("text", "sp")}
        largest = max(sum(int(c) == k for c in feats.img_concept[self.train_imgs]) for k in set(feats.img_concept[self.train_imgs].tolist()))
        self.negatives = min(NEGATIVES, len(self.train_imgs) - largest)  # fewer on a tiny dataset

    def _concept(self, kind: str, row: int) -> int:
        return int(getattr(self.f, kind + "_concept")[row])

    def _mine(self, kind: str) -> np.ndarray:
        """Per query: the HARD_POOL best-scoring training images of other concepts (first stage)."""
        q = torch.from_numpy(getattr(self.f, kind + "_tok")[:, 0].astype(np.float32))
        gal = self.f.img_glob[self.train_imgs]
        gal_concept = torch.from_numpy(self.f.img_concept[self.train_imgs].astype(np.int64))
        q_concept = torch.from_numpy(getattr(self.f, kind + "_concept").astype(np.int64))
        out = []
        for s in range(0, len(q), 1024):
            sim = q[s:s + 1024] @ gal.T
            sim[gal_concept[None, :] == q_concept[s:s + 1024, None]] = -9
            out.append(torch.from_numpy(self.train_imgs)[sim.topk(min(HARD_POOL, len(gal)), dim=1).indices])
        return torch.cat(out).numpy()

    def name_view(self, img_concepts: list[int], rng: random.Random, train_concepts: list[int]) -> list[int | None]:
        out: list[int | None] = []
        for c in img_concepts:
            u = rng.random()
            out.append(self.name_row[c] if u < NAME_OWN else
                       self.name_row[rng.choice(train_concepts)] if u < NAME_OWN + NAME_OTHER else None)
        return out

    def scores(self, net: CrossAttentionReranker, kind: str, q_rows: list[int], cand: np.ndarray,
               names: list[int | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C) re-rank logits r and first-stage cosines for queries x their candidate image rows."""
        b, c = cand.shape
        qt, qv = self.f.tensor(kind, q_rows)
        qtype = T_TEXT if kind == "text" else T_SOUND
        it, iv = self.f.tensor("img", cand.reshape(-1))
        qe, qve = qt.repeat_interleave(c, 0), qv.repeat_interleave(c, 0)
        first = (qe[:, 0] * it[:, 0]).sum(-1)
        n = b * c
        s_pix, g_pix = net.pair_scores(qe, qve, torch.full((n,), qtype), it, iv, torch.full((n,), T_PIX))
        score = torch.stack([s_pix, torch.zeros_like(s_pix)], -1)
        gate = torch.stack([g_pix, torch.zeros_like(g_pix)], -1)
        present = torch.zeros(n, 2, dtype=torch.bool)
        present[:, 0] = True
        have = [j for j, r in enumerate(names) if r is not None]
        if have:
            nt, nv = self.f.tensor("name", [names[j] for j in have])
            sel = torch.tensor(have)
            s_nm, g_nm = net.pair_scores(qe[sel], qve[sel], torch.full((len(have),), qtype), nt, nv, torch.full((len(have),), T_NAME))
            score[sel, 1], gate[sel, 1], present[sel, 1] = s_nm, g_nm, True
        r = net.fuse_views(score, gate, present)
        return r.view(b, c), first.view(b, c)

    def step_batch(self, rng: random.Random) -> list[tuple[str, list[int], np.ndarray, list[int]]]:
        picks = rng.sample(self.queries, min(self.cfg.batch, len(self.queries)))
        groups = []
        for kind in ("text", "sp"):
            rows = [r for k, r in picks if k == kind]
            if not rows:
                continue
            cand = []
            for r in rows:
                pos = rng.choice(self.imgs_of[self._concept(kind, r)])
                own = self._concept(kind, r)
                pool = [i for i in self.hard[kind][r] if int(self.f.img_concept[i]) != own]
                cand.append([pos] + rng.sample(pool, self.negatives))
            cand_arr = np.array(cand)
            groups.append((kind, rows, cand_arr, [int(self.f.img_concept[i]) for i in cand_arr.reshape(-1)]))
        return groups

    @torch.no_grad()
    def choose_weights(self, net: CrossAttentionReranker) -> dict[str, Any]:
        """Per pair: the (memory, learned) weights with the best validation R@1 that keep R@10 at least
        at the first stage's; ``final = first + memory * overlap + learned * r``."""
        net.eval()
        gal = np.array([r for c in sorted(self.val) for r in self.imgs_of[c]])
        gal_concept = torch.from_numpy(self.f.img_concept[gal].astype(np.int64))
        out: dict[str, Any] = {}
        for kind, pair in (("text", "text->image"), ("sp", "audio->image")):
            rows = [r for r, c in enumerate(getattr(self.f, kind + "_concept")) if int(c) in self.val][:400]
            firsts, rs, ovs, labels = [], [], [], []
            for s in range(0, len(rows), 16):
                q = rows[s:s + 16]
                cand = np.tile(gal, (len(q), 1))
                r, first = self.scores(net, kind, q, cand, [None] * cand.size)
                qt, _ = self.f.tensor(kind, q)
                ovs.append(net.memory_overlap(qt[:, 0].repeat_interleave(len(gal), 0),
                                              self.f.img_glob[torch.from_numpy(cand.reshape(-1))]).view(len(q), -1))
                firsts.append(first)
                rs.append(r)
                labels.append(gal_concept[None, :] == torch.tensor([self._concept(kind, x) for x in q])[:, None])
            first, r, ov, label = (torch.cat(x) for x in (firsts, rs, ovs, labels))
            base = _hits(first, label).float().mean(0)
            grid = {}
            for wm in MEMORY_GRID:
                for wr in LEARNED_GRID:
                    m = _hits(first + wm * ov + wr * r, label).float().mean(0)
                    grid[(wm, wr)] = (round(float(m[0]), 4), round(float(m[1]), 4))
            ok = {w: v for w, v in grid.items() if v[1] >= float(base[1]) - 1e-9}
            best = max(ok, key=lambda w: (ok[w][0], -w[0] - w[1])) if ok else (0.0, 0.0)
            out[pair] = {"first": {"R@1": round(float(base[0]), 4), "R@10": round(float(base[1]), 4)},
                         "memory": best[0], "learned": best[1],
                         "reranked": {"R@1": grid[best][0], "R@10": grid[best][1]}, "n": len(rows),
                         "memory_only": dict(zip(("R@1", "R@10"), grid[(1.0, 0.0)])),
                         "learned_only": dict(zip(("R@1", "R@10"), grid[(0.0, 1.0)]))}
        net.train()
        return out


def _hits(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    order = scores.argsort(dim=1, descending=True)
    rel = torch.gather(relevant, 1, order)
    return torch.stack([rel[:, :1].any(1), rel[:, :10].any(1)], 1)


def train_reranker(cfg: RerankConfig, model_name: str = "triad-mini") -> dict[str, Any]:
    device = "cpu"  # a few hundred thousand parameters: the CPU is fine (CUDA would mostly move data)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    feats = Features(cfg.data, model_name, cfg.fold_run)
    tr = Trainer(cfg, feats)
    dim = feats.img_tok.shape[2]
    net = CrossAttentionReranker(dim, cfg.width, cfg.heads, len(feats.memory)).to(device)
    net.memory.copy_(torch.from_numpy(feats.memory.astype(np.float32)))  # the concepts the feature towers know
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.01)
    ckpt = cfg.out / "rerank_checkpoint.pt"
    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "elapsed": 0.0}
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        log.warning("resumed the re-ranker from %s at epoch %d", ckpt, state["epoch"])
    rng = random.Random(cfg.seed + state["step"])
    total = cfg.epochs * cfg.steps_per_epoch
    train_concepts = sorted({c for c in tr.imgs_of if c not in tr.val})
    if state["epoch"] == 0:
        state["history"].append({"epoch": 0, **tr.choose_weights(net)})
    while state["epoch"] < cfg.epochs:
        t0 = time.perf_counter()
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"rerank epoch {state['epoch'] + 1}", leave=False)
        for _ in bar:
            lr = cfg.lr * min(1.0, (state["step"] + 1) / 50) * 0.5 * (1 + math.cos(math.pi * state["step"] / total))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = torch.zeros(())
            for kind, rows, cand, concepts in tr.step_batch(rng):
                names = tr.name_view(concepts, rng, train_concepts)
                r, first = tr.scores(net, kind, rows, cand, names)
                logits = net.scale.exp() * (first + r)
                loss = loss + F.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long)) * len(rows) / cfg.batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{net.scale.exp().item():.1f}")
        state["elapsed"] += time.perf_counter() - t0
        state["epoch"] += 1
        val = tr.choose_weights(net)
        state["history"].append({"epoch": state["epoch"], "loss": round(loss.item(), 4), **val})
        tqdm.write(json.dumps(state["history"][-1]))
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "state": state}, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)
    weights = {pair: v for pair, v in state["history"][-1].items() if "->" in pair}  # the last epoch's choice
    gain = float(np.mean([v["reranked"]["R@1"] - v["first"]["R@1"] for v in weights.values()]))
    summary = {"epochs": state["epoch"], "steps": state["step"], "minutes": round(state["elapsed"] / 60, 2),
               "weights": weights, "val_R@1_gain": round(gain, 4), "validation": state["history"][-1],
               "history": state["history"]}
    export = cfg.out / "export"
    _export(net, cfg, weights, summary, export, feats.export_memory)
    if cfg.export:
        cfg.export.mkdir(parents=True, exist_ok=True)
        for f in (WEIGHTS_FILE, CONFIG_FILE, MEMORY_FILE):
            (cfg.export / f).write_bytes((export / f).read_bytes())
        summary["registered"] = str(register_part(cfg.register, "reranker", cfg.export, (WEIGHTS_FILE, CONFIG_FILE, MEMORY_FILE)))
    (cfg.out / "rerank_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _export(net: CrossAttentionReranker, cfg: RerankConfig, weights: dict[str, Any], summary: dict[str, Any], out: Path,
            memory: np.ndarray) -> None:
    """Weights, config and the concept memory of the *bundled* image tower (every training concept)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in net.state_dict().items()}, str(out / WEIGHTS_FILE))
    save_file({"memory": torch.from_numpy(np.ascontiguousarray(memory, np.float16))}, str(out / MEMORY_FILE))
    pairs = [p for p, w in weights.items() if w["reranked"]["R@1"] - w["first"]["R@1"] >= MIN_GAIN]
    config = {"dim": net.proj_q.in_features, "width": cfg.width, "heads": cfg.heads, "pairs": pairs,
              "weights": {p: {"memory": w["memory"], "learned": w["learned"]} for p, w in weights.items()}, "k": 100, "trained": {k: summary[k] for k in ("epochs", "steps", "minutes", "val_R@1_gain", "validation")}}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1))
